"""The requests sessions the OAuth libraries (msal, google-auth, oauthlib) talk through.

Three things the defaults get wrong for us:

* ``REQUESTS_CA_BUNDLE`` in the environment overrides a session's ``verify``: the session
  must ignore the environment so the configured CA (the sandbox's, or the system's) is used;
* ``Session.close()`` forgets its connection pools without closing them: urllib3 2.8 closes
  a pool when it is garbage-collected, and every response still referenced (msal's HTTP
  cache keeps some) keeps its pool alive, so idle TLS connections would stay open for an
  unknown time. ``close_session`` closes every pooled connection now;
* a session sends anywhere: ``restrict_session`` checks each request against the egress gate
  (docs/privacy.md PP-5) in ``Session.send``, which requests also calls for every redirect
  it follows, so nothing the libraries do reaches a destination the gate refuses.
"""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter

from mailbox_worker.providers.egress_gate import EgressGate


def new_session(ca_file: str | None, egress: EgressGate | None = None) -> requests.Session:
    """A session that verifies TLS against ``ca_file`` (the system store when None) and,
    given ``egress``, sends only what it allows (``restrict_session``)."""
    session = requests.Session()
    configure_session(session, ca_file)
    if egress is not None:
        restrict_session(session, egress)
    return session


def restrict_session(session: requests.Session, egress: EgressGate) -> requests.Session:
    """Make every request of ``session`` — a redirect's too — pass ``egress`` first; a
    refused one raises ``PolicyViolation`` before a connection is made. Returns ``session``.

    Done on the instance, not by subclassing, because some sessions are created by the
    libraries themselves (google-auth-oauthlib's ``OAuth2Session``).
    """
    send = session.send

    def checked_send(request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        egress.check(request.method or "GET", request.url or "")
        return send(request, **kwargs)

    session.send = checked_send  # type: ignore[method-assign]  # the instance's own send
    return session


def configure_session(session: requests.Session, ca_file: str | None) -> None:
    """Make a session a library created verify against ``ca_file``, ignoring the environment."""
    session.trust_env = False
    session.verify = ca_file or True


def close_session(session: requests.Session) -> None:
    """Close every pooled connection of ``session`` at once, then the session."""
    for adapter in session.adapters.values():
        if isinstance(adapter, HTTPAdapter):
            pools = adapter.poolmanager.pools
            for key in pools.keys():  # noqa: SIM118 (the container refuses iteration)
                pool = pools.get(key)
                if pool is not None:
                    pool.close()
    session.close()
