"""The gate every request to Google passes, below the code that makes it (docs/privacy.md LU-3).

``GoogleOperationGate.check`` lets a request through only when
``policy.google_operations.allowed_operation`` names the rule that allows it; otherwise it
reports the attempt (a metric and an audit event, through a ``ViolationReporter``) and raises
``PolicyViolation`` — before anything is written to a socket. Two doors lead to Google and
both are gated:

* the Gmail provider (``providers/gmail.py``) checks each request it builds with
  google-api-python-client and again each one it sends with aiohttp;
* the OAuth libraries (google-auth, google-auth-oauthlib) talk through ``requests`` sessions on
  which ``gate_session`` mounts ``GatedAdapter``: every request of the session, whatever
  library code issues it, is checked by the adapter that would send it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import requests
from requests.adapters import HTTPAdapter

from mailbox_worker.errors import PolicyViolation
from mailbox_worker.policy.google_operations import Endpoint, allowed_operation, described

log = logging.getLogger(__name__)

RULE = "google_operation_allow_list"
"""The rule a refused Google request breaks (a metric label and the audit event's detail)."""


class ViolationReporter(Protocol):
    """Where an attempted forbidden operation is recorded. Called from any thread."""

    def policy_violation(self, rule: str, attempted: str) -> None:
        """Count the attempt and audit it; ``attempted`` names no person (``described``)."""
        ...


class LogOnly:
    """A ``ViolationReporter`` that only logs (for clients built outside the app)."""

    def policy_violation(self, rule: str, attempted: str) -> None:
        """Log the attempt."""
        log.error("policy violation (%s): %s refused", rule, attempted)


@dataclass(frozen=True)
class GoogleEndpoints:
    """The configured Google URLs the allow-list's rules are relative to."""

    gmail: str
    token: str
    revoke: str
    userinfo: str

    def as_mapping(self) -> Mapping[Endpoint, str]:
        return {
            "gmail": self.gmail,
            "token": self.token,
            "revoke": self.revoke,
            "userinfo": self.userinfo,
        }


class GoogleOperationGate:
    """Checks each request to Google against the allow-list; thread-safe (it keeps no state)."""

    def __init__(
        self, endpoints: GoogleEndpoints, reporter: ViolationReporter | None = None
    ) -> None:
        self._endpoints = endpoints.as_mapping()
        self._reporter: ViolationReporter = reporter if reporter is not None else LogOnly()

    def check(self, method: str, url: str) -> str:
        """The name of the rule that allows ``method url``.

        Raises ``PolicyViolation`` (code ``operation_not_allowed``) after reporting the
        attempt, when no rule does.
        """
        rule = allowed_operation(method, url, self._endpoints)
        if rule is not None:
            return rule.name
        attempted = described(method, url)
        self._reporter.policy_violation(RULE, attempted)
        raise PolicyViolation(
            f"{attempted} is not on the Google operation allow-list (docs/privacy.md LU-3)",
            code="operation_not_allowed",
        )


class GatedAdapter(HTTPAdapter):
    """A requests transport adapter that sends only what ``gate`` allows."""

    def __init__(self, gate: GoogleOperationGate) -> None:
        super().__init__()
        self._gate = gate

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        """Check, then send as ``HTTPAdapter`` does; ``PolicyViolation`` leaves unwrapped."""
        self._gate.check(request.method or "GET", request.url or "")
        return super().send(request, *args, **kwargs)


def gate_session(session: requests.Session, gate: GoogleOperationGate) -> requests.Session:
    """Route every request of ``session`` (both schemes) through ``gate``; returns it."""
    adapter = GatedAdapter(gate)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
