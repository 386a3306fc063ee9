"""Retention: the daemon purges what it may no longer keep, by itself (docs/retention.md).

Each pass of ``Retention.purge`` removes, per kind (the ``kind`` label of
``Telemetry.retention_purged``):

- ``job_events``: job events older than ``events_days`` (docs/privacy.md PP-4);
- ``outbox_events``: events the callback URL acknowledged more than ``events_days`` ago; an
  undelivered event is never purged, whatever its age (PP-4);
- ``audit_events``: audit entries older than ``events_days``, oldest first and only as a whole
  prefix of the trail (every entry below the first one still inside the period), so a later
  hash chain can re-anchor on the first entry kept (PP-4, PP-8);
- ``job_contents``: the message content of a job that ended (sent, drafted, failed, cancelled)
  more than ``content_days`` ago (PP-6). Never the content of a job that can still run: not of
  a queued, running or held job, nor of an ``unknown`` one, which a settlement may queue again
  (``JobStore.settle_unknown``);
- ``oauth_states``: pending authorizations past their expiry (their sealed PKCE verifier is
  token material: the storage scrub runs after they go, ``db/erasure.py``);
- ``idempotency_keys``: the ``Idempotency-Key`` of a job enqueued more than
  ``idempotency_hours`` ago is forgotten (set to NULL): the key no longer answers that job, and
  its next use enqueues a new one (``JobStore`` ignores such a key even before this pass);
- ``disconnected_mailboxes``: a mailbox disconnected more than ``events_days`` ago keeps its row
  (the tombstone: its id, provider, state and dates) but loses its address and the provider
  identity it was pinned to (PP-2, PP-4; its tokens went at the disconnect).
- ``claim_hours``: a mailbox's recipients by the hour (``mailbox_claim_hours``) older than
  ``CLAIM_HOURS_KEPT``: the daily cap reads only the last day's (migration 0022).

Every statement deletes (or blanks) at most ``batch_size`` rows chosen by primary key, in a
transaction of its own; between two batches the pass sleeps ``pause`` seconds, so the worker's
claims and outcomes, which need the same tables (and on SQLite the one write lock), are never
kept waiting for more than one batch. On PostgreSQL the batch skips rows another transaction
holds locked (``FOR UPDATE SKIP LOCKED``) rather than wait for them. A pass stops between
batches when the daemon stops; what is left goes at the next pass.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Delete, Update, delete, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailbox_worker.clock import Clock, utcnow
from mailbox_worker.db.erasure import StorageScrubber
from mailbox_worker.db.models import (
    AuditEvent,
    Job,
    JobContent,
    JobEvent,
    Mailbox,
    MailboxClaimHour,
    OAuthState,
    OutboxEvent,
)
from mailbox_worker.db.outage import is_database_unavailable
from mailbox_worker.periodic import Periodic, wait_or_stop
from mailbox_worker.states import TERMINAL, JobState, MailboxState
from mailbox_worker.telemetry import Telemetry

log = logging.getLogger(__name__)

MAX_EVENTS_DAYS = 90
"""The longest ``events_days`` may be: the privacy policy keeps traces 90 days (PP-4)."""

CLAIM_HOURS_KEPT = dt.timedelta(days=2)
"""How long a mailbox's recipients by the hour are kept: the daily cap reads the last day's,
and a job's claim is counted back out of its hour for two days (migration 0022)."""

CONTENT_PURGEABLE: frozenset[str] = frozenset(TERMINAL - {JobState.UNKNOWN})
"""Job states whose content may go: ``unknown`` is terminal but a settlement may queue it again."""


@dataclass(frozen=True)
class RetentionSettings:
    """The ``[retention]`` section (docs/retention.md)."""

    interval: float = 3600.0
    """Seconds between two purge passes."""
    events_days: int = MAX_EVENTS_DAYS
    """How long job, outbox and audit events, and a disconnected mailbox's address, are kept;
    at most ``MAX_EVENTS_DAYS`` (checked at load)."""
    content_days: int = 7
    """How long a finished job's content is kept after it finished."""
    batch_size: int = 500
    """The most rows one statement deletes."""
    pause: float = 0.05
    """Seconds between two batches, so dispatch is never starved."""
    idempotency_hours: int = 24
    """How long an ``Idempotency-Key`` answers the job it first enqueued; at most
    ``events_days`` (checked at load)."""


BatchStatement = Callable[[dt.datetime, int], Delete | Update]
"""Builds one batch: ``(now, at most this many rows)``."""


class Retention:
    """Purges expired data in small batches (see the module docstring)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: RetentionSettings,
        *,
        scrubber: StorageScrubber | None = None,
        telemetry: Telemetry | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._scrubber = scrubber
        self._telemetry = telemetry
        self._clock = clock
        self._events_window = dt.timedelta(days=settings.events_days)
        self._content_window = dt.timedelta(days=settings.content_days)
        self._idempotency_window = dt.timedelta(hours=settings.idempotency_hours)

    def _kinds(self) -> dict[str, BatchStatement]:
        return {
            "job_events": self._job_events,
            "outbox_events": self._outbox_events,
            "audit_events": self._audit_events,
            "job_contents": self._job_contents,
            "oauth_states": self._oauth_states,
            "idempotency_keys": self._idempotency_keys,
            "disconnected_mailboxes": self._disconnected_mailboxes,
            "claim_hours": self._claim_hours,
        }

    async def purge(self, stop: asyncio.Event | None = None) -> dict[str, int]:
        """One pass over every kind; returns the rows purged by kind. Stops between two
        batches once ``stop`` is set. Storage freed by purged OAuth states is scrubbed."""
        purged: dict[str, int] = {}
        for kind, statement in self._kinds().items():
            purged[kind] = await self._purge_kind(kind, statement, stop)
            if stop is not None and stop.is_set():
                break
        if purged.get("oauth_states") and self._scrubber is not None:
            await self._scrubber.after_erasure()
        if any(purged.values()):
            log.info(
                "retention purged %s",
                ", ".join(f"{count} {kind}" for kind, count in purged.items() if count),
            )
        return purged

    async def run(self, stop: asyncio.Event) -> None:
        """Purge at start, then every ``interval`` seconds, until ``stop`` is set."""
        loop = Periodic(
            "retention purge",
            lambda: self.purge(stop),
            self._settings.interval,
            name="retention",
            telemetry=self._telemetry,
            database_unavailable=is_database_unavailable,
            logger=log,
        )
        await loop.run(stop)

    async def _purge_kind(
        self, kind: str, statement: BatchStatement, stop: asyncio.Event | None
    ) -> int:
        batch = self._settings.batch_size
        total = 0
        while True:
            count = await self._batch(statement(self._clock(), batch))
            total += count
            if count and self._telemetry is not None:
                self._telemetry.retention_purged(kind, count)
            if count < batch or (stop is not None and stop.is_set()):
                return total
            await _pause(self._settings.pause, stop)

    async def _batch(self, statement: Delete | Update) -> int:
        async with self._sessions.begin() as session:
            result = await session.execute(statement)
        return int(result.rowcount)  # type: ignore[attr-defined]

    # -- one statement a kind: at most ``limit`` rows, chosen by primary key -------------------

    def _job_events(self, now: dt.datetime, limit: int) -> Delete:
        chosen = (
            select(JobEvent.id)
            .where(JobEvent.at < now - self._events_window)
            .order_by(JobEvent.at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return delete(JobEvent).where(JobEvent.id.in_(chosen))

    def _outbox_events(self, now: dt.datetime, limit: int) -> Delete:
        chosen = (
            select(OutboxEvent.id)
            .where(
                OutboxEvent.delivered_at.is_not(None),  # never one still to deliver
                OutboxEvent.delivered_at < now - self._events_window,
            )
            .order_by(OutboxEvent.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return delete(OutboxEvent).where(OutboxEvent.id.in_(chosen))

    def _audit_events(self, now: dt.datetime, limit: int) -> Delete:
        # Only entries below the first one still inside the period: the trail loses a prefix,
        # never a row in its middle. No SKIP LOCKED: skipping a row would break the prefix.
        first_kept = (
            select(func.min(AuditEvent.id))
            .where(AuditEvent.at >= now - self._events_window)
            .scalar_subquery()
        )
        chosen = (
            select(AuditEvent.id)
            .where(or_(first_kept.is_(None), AuditEvent.id < first_kept))
            .order_by(AuditEvent.id)
            .limit(limit)
        )
        return delete(AuditEvent).where(AuditEvent.id.in_(chosen))

    def _job_contents(self, now: dt.datetime, limit: int) -> Delete:
        chosen = (
            select(JobContent.job_id)
            .join(Job, Job.id == JobContent.job_id)
            .where(
                Job.state.in_(CONTENT_PURGEABLE),
                Job.finished_at < now - self._content_window,
            )
            .limit(limit)
            .with_for_update(of=JobContent, skip_locked=True)
        )
        return delete(JobContent).where(JobContent.job_id.in_(chosen))

    def _claim_hours(self, now: dt.datetime, limit: int) -> Delete:
        chosen = (
            select(MailboxClaimHour.mailbox_id, MailboxClaimHour.hour)
            .where(MailboxClaimHour.hour < now - CLAIM_HOURS_KEPT)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        key = tuple_(MailboxClaimHour.mailbox_id, MailboxClaimHour.hour)
        return delete(MailboxClaimHour).where(key.in_(chosen))

    def _oauth_states(self, now: dt.datetime, limit: int) -> Delete:
        chosen = (
            select(OAuthState.state_sha256)
            .where(OAuthState.expires_at < now)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return delete(OAuthState).where(OAuthState.state_sha256.in_(chosen))

    def _idempotency_keys(self, now: dt.datetime, limit: int) -> Update:
        chosen = (
            select(Job.id)
            .where(
                Job.idempotency_key.is_not(None),
                Job.created_at <= now - self._idempotency_window,
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return update(Job).where(Job.id.in_(chosen)).values(idempotency_key=None)

    def _disconnected_mailboxes(self, now: dt.datetime, limit: int) -> Update:
        # A disconnected mailbox never changes state again: ``updated_at`` is at or after its
        # disconnect, so the window may start late, never early.
        chosen = (
            select(Mailbox.id)
            .where(
                Mailbox.state == MailboxState.DISCONNECTED,
                Mailbox.updated_at < now - self._events_window,
                or_(
                    Mailbox.address.is_not(None),
                    Mailbox.identity_tenant.is_not(None),
                    Mailbox.identity_subject.is_not(None),
                ),
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return (
            update(Mailbox)
            .where(Mailbox.id.in_(chosen))
            .values(address=None, identity_tenant=None, identity_subject=None)
        )


async def _pause(seconds: float, stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.sleep(seconds)
    else:
        await wait_or_stop(stop, seconds)
