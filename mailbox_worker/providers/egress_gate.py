"""The egress gate: every outbound request is checked against ``policy.egress`` first
(docs/privacy.md PP-5; how it is wired: docs/architecture.md, "Outbound requests").

``EgressGate.check`` lets a request through when the ``EgressPolicy`` allows its URL;
otherwise it reports the attempt (the policy-violation counter with rule
``egress_allow_list``, and an audit event, through the same ``ViolationReporter`` as the
Google gate) and raises ``PolicyViolation`` (code ``egress_not_allowed``) before anything is
written to a socket. What is reported names the destination's origin only.

Each HTTP client the daemon creates carries the gate:

* aiohttp sessions (the providers', the callback deliveries') get ``egress_tracing``: its
  ``on_request_start`` hook checks the URL before a connection is taken, and its
  ``on_request_redirect`` hook checks a redirect's ``Location`` before it is followed
  (aiohttp sends ``on_request_start`` once per request, not per redirect);
* requests sessions (msal, google-auth, oauthlib) are restricted by
  ``tokens/oauth_sessions.py``, whose check runs in ``Session.send``, which requests also
  calls for each redirect.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import aiohttp
from yarl import URL

from mailbox_worker.errors import PolicyViolation
from mailbox_worker.policy.egress import EgressPolicy, described
from mailbox_worker.providers.google_gate import LogOnly, ViolationReporter

log = logging.getLogger(__name__)

RULE = "egress_allow_list"
"""The rule a refused destination breaks (a metric label and the audit event's detail)."""


class EgressGate:
    """Checks each outbound URL against an ``EgressPolicy``; thread-safe (it keeps no state).

    Without a policy nothing is refused: for components built outside the composition root
    (tests, tools). ``App.build`` always gives one.
    """

    def __init__(
        self, policy: EgressPolicy | None = None, reporter: ViolationReporter | None = None
    ) -> None:
        self._policy = policy
        self._reporter: ViolationReporter = reporter if reporter is not None else LogOnly()

    def check(self, method: str, url: str) -> None:
        """Return when ``method url`` may leave; otherwise report the attempt and raise
        ``PolicyViolation`` (code ``egress_not_allowed``)."""
        if self._policy is None or self._policy.allows(url):
            return
        attempted = f"{method.upper()} {described(url)}"
        self._reporter.policy_violation(RULE, attempted)
        raise PolicyViolation(
            f"{attempted} is not an allowed destination (docs/privacy.md PP-5)",
            code="egress_not_allowed",
        )


def egress_tracing(gate: EgressGate) -> aiohttp.TraceConfig:
    """Trace hooks that make an aiohttp session send only what ``gate`` allows.

    The ``PolicyViolation`` a hook raises leaves ``session.request`` unwrapped, before a
    connection is made (a redirect's target is refused before it is connected to).
    """

    async def on_request_start(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        gate.check(params.method, str(params.url))

    async def on_request_redirect(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestRedirectParams,
    ) -> None:
        headers = params.response.headers
        location = headers.get("Location") or headers.get("URI")
        if location is None:
            return  # aiohttp follows nothing: it returns the redirect answer itself
        try:
            target = params.url.join(URL(location))
        except ValueError:
            target = URL()  # unreadable: refused below, as aiohttp would not follow it safely
        gate.check(params.method, str(target))

    tracing = aiohttp.TraceConfig()
    tracing.on_request_start.append(on_request_start)
    tracing.on_request_redirect.append(on_request_redirect)
    return tracing
