"""What the HTTP API needs from the rest of the daemon, as small ports, and the views they
answer with.

The composition root (``mailbox_worker.app``) builds an ``ApiServices`` from the real
components; the API holds no business rules of its own: it authenticates, parses,
validates against the OpenAPI document, calls these ports and renders their answers. The
answers are small frozen views (``JobView``, ``MailboxView``, ``AccountView``,
``Principal``) defined beside the services; the API never sees a database row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from mailbox_worker.accounts import AccountView, Principal, SupportGrantView
from mailbox_worker.api.admin_session import AdminSessions, KeyLookup
from mailbox_worker.api.rate_limits import RateLimitSettings
from mailbox_worker.clock import Clock, utcnow
from mailbox_worker.jobs.intake import JobEventView, JobView, Submission
from mailbox_worker.jobs.store import JobFilter
from mailbox_worker.mailboxes.account_rights import ErasureReport, PauseView
from mailbox_worker.mailboxes.service import (
    CONNECTED_OUTCOME,
    CallbackResult,
    ConnectionStart,
    MailboxView,
)
from mailbox_worker.telemetry import MetricsPage, Telemetry


class JobOperations(Protocol):
    """Enqueue, read and cancel jobs (``jobs.intake.JobIntake``)."""

    async def submit(self, principal: Principal, submission: Submission) -> tuple[JobView, bool]:
        """Commit a job and return ``(job, created)``; raises ``RequestError`` subclasses."""
        ...

    async def get(self, principal: Principal, job_id: str) -> JobView:
        """The job with its events; ``NotFound`` for another account's or unknown job."""
        ...

    async def find(
        self,
        principal: Principal,
        wanted: JobFilter,
        limit: int,
        after: tuple[dt.datetime, str] | None = None,
    ) -> list[JobView]:
        """The caller's jobs matching ``wanted`` (its account, whatever ``wanted`` says),
        newest first (ties: greater id first), at most ``limit``, after the
        ``(created_at, id)`` of the previous page's last one; metadata only, no events."""
        ...

    async def cancel(self, principal: Principal, job_id: str) -> JobView:
        """Cancel a queued/held/unknown job; ``Conflict`` (job_not_cancellable) otherwise."""
        ...

    async def resolve(self, principal: Principal, job_id: str) -> JobView:
        """Settle an unknown job as sent; ``Conflict`` (job_not_unknown) otherwise."""
        ...

    async def retry(self, principal: Principal, job_id: str) -> JobView:
        """Queue an unknown job again; ``Conflict`` (job_not_unknown) otherwise."""
        ...


class MailboxConnector(Protocol):
    """Connect, read and disconnect mailboxes (``mailboxes.service.MailboxService``)."""

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

    async def get(self, principal: Principal, mailbox_id: str) -> MailboxView: ...

    async def list(
        self,
        principal: Principal,
        *,
        limit: int | None = None,
        after: tuple[dt.datetime, str] | None = None,
        include_disconnected: bool = True,
    ) -> list[MailboxView]:
        """The caller's mailboxes, oldest first (ties: smaller id first): at most ``limit``
        (None: all), after the ``(created_at, id)`` of the previous page's last one."""
        ...

    async def held_job_counts(self, principal: Principal) -> Mapping[str, int]:
        """How many jobs wait ``held`` for each of the caller's mailboxes (absent: none)."""
        ...

    async def disconnect(self, principal: Principal, mailbox_id: str) -> MailboxView:
        """Revoke, erase tokens, cancel pending jobs; idempotent."""
        ...

    async def set_limits(
        self, principal: Principal, mailbox_id: str, limits: Mapping[str, int | None]
    ) -> MailboxView:
        """Change some of the mailbox's sending limits (None: the provider's default)."""
        ...

    async def complete(self, query: Mapping[str, str]) -> CallbackResult:
        """Finish an authorization from the provider's redirect query parameters."""
        ...


class AccountOperations(KeyLookup, Protocol):
    """Authenticate API keys; read and change the caller's account
    (``accounts.AccountService``)."""

    async def account(self, principal: Principal) -> AccountView:
        """The caller's account; ``NotFound`` (account_not_found) once it is deleted."""
        ...

    async def set_return_origins(self, principal: Principal, origins: list[str]) -> AccountView:
        """Replace the account's return origins; ``InvalidRequest`` (invalid_origin)."""
        ...

    async def grant_support(
        self, principal: Principal, hours: int, reason: str
    ) -> SupportGrantView:
        """Grant support access for ``hours`` (docs/privacy.md PP-3), replacing an active
        grant; ``InvalidRequest`` (invalid_support_grant)."""
        ...

    async def revoke_support(self, principal: Principal) -> SupportGrantView | None:
        """End the active support grant now; None when there was none."""
        ...

    async def support_grant(self, principal: Principal) -> SupportGrantView | None:
        """The active support grant, or None."""
        ...


class AccountRightsOperations(Protocol):
    """An account's data rights (``mailboxes.account_rights.AccountRights``); each raises
    ``NotFound`` (account_not_found) for an unknown account. ``actor`` is audited."""

    async def export(self, account_id: str) -> dict[str, Any]:
        """Everything held about the account, as JSON values, without a secret."""
        ...

    async def pause(self, account_id: str, actor: str) -> PauseView: ...

    async def resume(self, account_id: str, actor: str) -> PauseView: ...

    async def erase(self, account_id: str, actor: str) -> ErasureReport:
        """Revoke and wipe every mailbox; delete every row but the erasure's audit record."""
        ...


@dataclass(frozen=True)
class ApiServices:
    accounts: AccountOperations
    jobs: JobOperations
    mailboxes: MailboxConnector
    rights: AccountRightsOperations
    admin_sessions: AdminSessions
    """The admin page's sessions (one store per running application)."""
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
    database_unavailable: Callable[[BaseException], bool] = lambda _error: False
    """Whether an exception means the database cannot be reached (answered 503)."""
    rate_limits: RateLimitSettings = field(default_factory=RateLimitSettings)
    """Per-key rate limits and the brake on bad keys (``[api]``; docs/api.md#rate-limits)."""
    clock: Clock = utcnow
    """The time the rate limits count in."""


__all__ = [
    "CONNECTED_OUTCOME",
    "AccountOperations",
    "AccountRightsOperations",
    "AccountView",
    "ApiServices",
    "CallbackResult",
    "ConnectionStart",
    "ErasureReport",
    "JobEventView",
    "JobFilter",
    "JobOperations",
    "JobView",
    "MailboxConnector",
    "MailboxView",
    "PauseView",
    "Principal",
    "Submission",
    "SupportGrantView",
]
