"""What the HTTP API needs from the rest of the daemon, as small ports.

The composition root (``mailbox_worker.app``) builds an ``ApiServices`` from the real
components; the API holds no business rules of its own: it authenticates, parses,
validates against the OpenAPI document, calls these ports and renders their answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from mailbox_worker.db.accounts import AccountStore, Principal
from mailbox_worker.db.models import Job, JobEvent, Mailbox
from mailbox_worker.jobs.intake import Submission
from mailbox_worker.mailboxes.service import CallbackResult, ConnectionStart
from mailbox_worker.telemetry import MetricsPage, Telemetry


class JobIntake(Protocol):
    async def submit(self, principal: Principal, submission: Submission) -> tuple[Job, bool]:
        """Commit a job and return ``(job, created)``; raises ``RequestError`` subclasses."""
        ...

    async def get(self, principal: Principal, job_id: str) -> tuple[Job, list[JobEvent]]:
        """The job and its events; ``NotFound`` for another account's or unknown job."""
        ...

    async def cancel(self, principal: Principal, job_id: str) -> Job:
        """Cancel a queued/held job; ``Conflict`` (job_not_cancellable) once it left them."""
        ...


class MailboxConnector(Protocol):
    async def create(
        self,
        principal: Principal,
        provider: str,
        capabilities: list[str],
        return_url: str | None,
        login_hint: str | None,
    ) -> ConnectionStart:
        """Create a mailbox and start its OAuth authorization."""
        ...

    async def reconnect(
        self, principal: Principal, mailbox_id: str, return_url: str | None
    ) -> ConnectionStart:
        """Start a new authorization for an existing (not disconnected) mailbox."""
        ...

    async def get(self, principal: Principal, mailbox_id: str) -> Mailbox: ...

    async def list(self, principal: Principal) -> list[Mailbox]: ...

    async def disconnect(self, principal: Principal, mailbox_id: str) -> Mailbox:
        """Revoke, erase tokens, cancel pending jobs; idempotent."""
        ...

    async def complete(self, query: Mapping[str, str]) -> CallbackResult:
        """Finish an authorization from the provider's redirect query parameters."""
        ...


@dataclass(frozen=True)
class ApiServices:
    accounts: AccountStore
    jobs: JobIntake
    mailboxes: MailboxConnector
    telemetry: Telemetry
    """Where the API counts the requests it answers."""
    metrics_page: MetricsPage
    """Renders ``GET /metrics``."""
    ready: Callable[[], Awaitable[Mapping[str, bool]]]
    """Readiness checks by name (e.g. ``database``, ``migrations``); all True means ready."""
    max_request_bytes: int = 16 * 1024 * 1024
    body_timeout: float = 60.0
    """Seconds a handler waits for a request body (``server.body_timeout``)."""
    public_url: str = ""
    """Where browsers reach the daemon (``server.public_url``); empty: the request's origin."""


__all__ = [
    "ApiServices",
    "CallbackResult",
    "ConnectionStart",
    "JobIntake",
    "MailboxConnector",
    "Submission",
]
