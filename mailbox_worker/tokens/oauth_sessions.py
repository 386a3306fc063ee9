"""The requests sessions the OAuth libraries (msal, google-auth, oauthlib) talk through.

Two things the defaults get wrong for us:

* ``REQUESTS_CA_BUNDLE`` in the environment overrides a session's ``verify``: the session
  must ignore the environment so the configured CA (the sandbox's, or the system's) is used;
* ``Session.close()`` forgets its connection pools without closing them: urllib3 2.8 closes
  a pool when it is garbage-collected, and every response still referenced (msal's HTTP
  cache keeps some) keeps its pool alive, so idle TLS connections would stay open for an
  unknown time. ``close_session`` closes every pooled connection now.
"""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter


def new_session(ca_file: str | None) -> requests.Session:
    """A session that verifies TLS against ``ca_file`` (the system store when None)."""
    session = requests.Session()
    configure_session(session, ca_file)
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
