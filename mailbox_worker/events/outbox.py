"""Events for the invoicing app, written in the same database and delivered later.

An event is a row until the app's callback URL acknowledges it (at-least-once delivery:
the app de-duplicates by the event ``id``). Payloads carry ids, states and stable codes —
never message content, addresses of recipients or tokens.

Delivering processes lease events (``db/leases.py``): an event is POSTed by one process at a
time; a process that dies holding it only delays it until its lease expires.

Events are delivered in order per ``ordering_key`` (a job's id for job events, a mailbox's id
for mailbox events): an event is claimed only when no older event with its key waits to be
acknowledged, so a job's second event is never POSTed before its first was acknowledged —
not after a failed POST, not by another process. Different keys are delivered in parallel.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ColumnElement, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from mailbox_worker.clock import Clock, new_id, utcnow
from mailbox_worker.db.leases import claim_statement, held_by
from mailbox_worker.db.models import OutboxEvent
from mailbox_worker.events.types import EVENT_ID_PREFIX, EventType


def ordering_key_of(payload: dict[str, Any]) -> str | None:
    """The key an event is ordered under: the payload's ``job_id``, else its ``mailbox_id``,
    else None (ordered after nothing)."""
    for name in ("job_id", "mailbox_id"):
        value = payload.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def outbox_row(
    account_id: str, kind: str, payload: dict[str, Any], at: dt.datetime | None = None
) -> OutboxEvent:
    """An event to add inside a caller's own transaction, so it exists iff the change does;
    made ``at`` the time given (the system clock's by default), ordered under
    ``ordering_key_of(payload)``, with a fresh ``evt_…`` id. ``kind`` must be one of
    ``EventType`` (a ``ValueError`` otherwise): the documented events are all there is.

    For one key, the caller's transaction must take a lock that serialises the changes it
    announces (the job's or mailbox's row, by its guarded update) before adding the row, so
    that ids of one key are allocated in commit order.
    """
    EventType(kind)  # raises ValueError for a type nobody described
    now = utcnow() if at is None else at
    return OutboxEvent(
        public_id=new_id(EVENT_ID_PREFIX),
        account_id=account_id,
        kind=kind,
        payload=payload,
        created_at=now,
        attempts=0,
        next_attempt_at=now,
        ordering_key=ordering_key_of(payload),
    )


def first_of_its_key() -> ColumnElement[bool]:
    """No older event with the same ordering key is still unacknowledged (leased or not)."""
    older = aliased(OutboxEvent, name="older")
    return ~exists().where(
        older.ordering_key == OutboxEvent.ordering_key,
        older.id < OutboxEvent.id,
        older.delivered_at.is_(None),
    )


class Outbox:
    """The outbox as seen by one process; ``owner`` names it in the leases it takes."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock = utcnow,
        owner: str | None = None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self.owner = new_id("outbox") if owner is None else owner

    async def add(self, account_id: str, kind: str, payload: dict[str, Any]) -> None:
        async with self._sessions.begin() as session:
            session.add(outbox_row(account_id, kind, payload, self._clock()))

    async def claim(self, limit: int, lease: dt.timedelta) -> list[OutboxEvent]:
        """Lease up to ``limit`` due, undelivered events to this process until ``now + lease``
        (oldest first); no other process gets them while the lease holds. Only the oldest
        unacknowledged event of each ordering key can be due, so a batch holds at most one
        event a key."""
        if limit <= 0:
            return []
        now = self._clock()
        due = (
            OutboxEvent.delivered_at.is_(None)
            & (OutboxEvent.next_attempt_at <= now)
            & first_of_its_key()
        )
        claim = claim_statement(OutboxEvent, due, OutboxEvent.id, limit, self.owner, now, lease)
        async with self._sessions.begin() as session:
            events = list((await session.scalars(claim)).all())
        return sorted(events, key=lambda event: event.id)

    async def delivered(self, event_id: int) -> None:
        """Mark the event acknowledged (even if this process lost its lease meanwhile: the
        app has it either way)."""
        async with self._sessions.begin() as session:
            await session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id == event_id)
                .values(delivered_at=self._clock(), lease_owner=None, lease_expires_at=None)
            )

    async def retry_later(self, event_id: int, attempts: int, wait: dt.timedelta) -> bool:
        """Release the event until ``now + wait``; False if this process no longer held it."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(OutboxEvent)
                .where(held_by(OutboxEvent, event_id, self.owner))
                .values(
                    attempts=attempts,
                    next_attempt_at=self._clock() + wait,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def all(self) -> list[OutboxEvent]:
        async with self._sessions() as session:
            return list((await session.scalars(select(OutboxEvent).order_by(OutboxEvent.id))).all())
