"""The telemetry port: what the daemon counts, one method a thing counted.

Components receive a ``Telemetry`` through their constructors and never know where the figures
go; the composition root (``mailbox_worker.app``) hands them the Prometheus adapter
(``mailbox_worker.prometheus``), the only module that knows ``prometheus_client``.

Arguments are only bounded, non-personal values: provider names, states, operations, stable
error codes, route templates. Never an address, a subject, an account name or a token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

MetricsPage = Callable[[], tuple[bytes, str]]
"""Renders every metric for ``GET /metrics``: ``(body, content type)``."""


class Telemetry(Protocol):
    def job_enqueued(self, mode: str) -> None:
        """The API accepted a dispatch job in ``mode`` (``send`` or ``draft``)."""
        ...

    def job_transition(self, state: str, code: str) -> None:
        """A job left ``running`` for ``state``, with stable ``code`` (``ok`` on success)."""
        ...

    def jobs_in_state(self, state: str, count: int) -> None:
        """``count`` jobs are in ``state`` now (sampled by the worker)."""
        ...

    def job_age(self, state: str, seconds: float) -> None:
        """The oldest job waiting in ``state`` (``queued``: due; ``running``: since claimed)
        has waited ``seconds`` (0 when there is none; sampled by the worker)."""
        ...

    def mailboxes_in_state(self, provider: str, state: str, count: int) -> None:
        """``count`` mailboxes of ``provider`` are in ``state`` now (sampled by the worker)."""
        ...

    def job_processed(self, provider: str, mode: str, seconds: float) -> None:
        """The worker processed one claimed job of a ``provider`` mailbox in ``mode``, from its
        claim to its outcome recorded (whatever the outcome), in ``seconds``."""
        ...

    def job_deferred(self, provider: str, code: str, seconds: float) -> None:
        """A running job went back to ``queued`` for ``seconds`` because of error ``code``
        (``throttled`` among them); ``provider`` is ``none`` when the mailbox is not known."""
        ...

    def leases_recovered(self, result: str, count: int) -> None:
        """``count`` jobs whose lease expired were recovered: ``requeued`` (no request was in
        flight) or ``unknown`` (one was)."""
        ...

    def provider_request(
        self, provider: str, operation: str, outcome: str, seconds: float, status: int | None
    ) -> None:
        """One provider call ended with ``outcome`` (``ok`` or a stable code) after ``seconds``;
        ``status`` is the provider's HTTP status (None: no answer, or none recorded)."""
        ...

    def token_refresh(self, provider: str, outcome: str) -> None:
        """An access-token refresh at the identity provider ended with ``outcome``."""
        ...

    def mailbox_reauth(self, provider: str, reason: str) -> None:
        """A mailbox lost its grant (``reason``, a stable code) and needs consent again."""
        ...

    def mailbox_paused(self, reason: str) -> None:
        """A mailbox was paused for every worker (``reason``: ``throttled``, a provider's 429)."""
        ...

    def in_flight(self, count: int) -> None:
        """This process works on ``count`` jobs now."""
        ...

    def active_key_age(self, seconds: Callable[[], float]) -> None:
        """Report the active key's age as ``seconds()`` answers it when read (NaN: unknown)."""
        ...

    def loop_error(self, loop: str) -> None:
        """A pass of background ``loop`` (a fixed name, e.g. ``worker``) raised; it goes on."""
        ...

    def loop_started(self, loop: str, interval: float) -> None:
        """Background ``loop`` started; it means to succeed a pass every ``interval`` seconds."""
        ...

    def loop_succeeded(self, loop: str) -> None:
        """A pass of background ``loop`` returned (its "last success" is now)."""
        ...

    def callback_delivery(self, result: str) -> None:
        """One event POSTed to the callback URL: ``delivered`` (2xx), ``rejected`` (another
        status) or ``unreachable`` (no answer in time)."""
        ...

    def pending_outcomes(self, count: int) -> None:
        """``count`` job outcomes are kept in memory now, waiting for the database."""
        ...

    def outcome_flushed(self, result: str) -> None:
        """A pending outcome left memory: ``written``, ``lease_lost`` (written too late: the
        job was recovered meanwhile) or ``abandoned`` (the worker stopped first)."""
        ...

    def policy_violation(self, rule: str) -> None:
        """An operation ``rule`` forbids was attempted and refused (docs/privacy.md LU-3)."""
        ...

    def http_request(self, method: str, route: str, status: int) -> None:
        """The API answered ``method`` on ``route`` (a template) with ``status``."""
        ...

    def api_rate_limited(self, reason: str) -> None:
        """The API refused a request with 429 for ``reason`` (``rate_limited`` or
        ``too_many_failed_attempts``; docs/api.md#rate-limits)."""
        ...

    def retention_purged(self, kind: str, rows: int) -> None:
        """A retention batch purged ``rows`` rows of ``kind`` (``job_events``, ``job_contents``,
        …: the kinds of ``db/retention.py``; docs/privacy.md PP-4, PP-6)."""
        ...
