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

    def provider_request(self, provider: str, operation: str, outcome: str, seconds: float) -> None:
        """One provider call ended with ``outcome`` (``ok`` or a stable code) after ``seconds``."""
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

    def retention_purged(self, kind: str, rows: int) -> None:
        """A retention batch purged ``rows`` rows of ``kind`` (``job_events``, ``job_contents``,
        …: the kinds of ``db/retention.py``; docs/privacy.md PP-4, PP-6)."""
        ...
