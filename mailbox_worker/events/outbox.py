"""Events for the invoicing app, written in the same database and delivered later.

An event is a row until the app's callback URL acknowledges it (at-least-once delivery:
the app de-duplicates by the event ``id``). Payloads carry ids, states and stable codes —
never message content, addresses of recipients or tokens.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailbox_worker.clock import Clock, utcnow
from mailbox_worker.db.models import OutboxEvent


def outbox_row(
    account_id: str, kind: str, payload: dict[str, Any], at: dt.datetime | None = None
) -> OutboxEvent:
    """An event to add inside a caller's own transaction, so it exists iff the change does;
    made ``at`` the time given (the system clock's by default)."""
    now = utcnow() if at is None else at
    return OutboxEvent(
        account_id=account_id,
        kind=kind,
        payload=payload,
        created_at=now,
        attempts=0,
        next_attempt_at=now,
    )


class Outbox:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock = utcnow) -> None:
        self._sessions = sessions
        self._clock = clock

    async def add(self, account_id: str, kind: str, payload: dict[str, Any]) -> None:
        async with self._sessions.begin() as session:
            session.add(outbox_row(account_id, kind, payload, self._clock()))

    async def due(self, limit: int = 50) -> list[OutboxEvent]:
        query = (
            select(OutboxEvent)
            .where(OutboxEvent.delivered_at.is_(None), OutboxEvent.next_attempt_at <= self._clock())
            .order_by(OutboxEvent.id)
            .limit(limit)
        )
        async with self._sessions() as session:
            return list((await session.scalars(query)).all())

    async def delivered(self, event_id: int) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id == event_id)
                .values(delivered_at=self._clock())
            )

    async def retry_later(self, event_id: int, attempts: int, wait: dt.timedelta) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id == event_id)
                .values(attempts=attempts, next_attempt_at=self._clock() + wait)
            )

    async def all(self) -> list[OutboxEvent]:
        async with self._sessions() as session:
            return list((await session.scalars(select(OutboxEvent).order_by(OutboxEvent.id))).all())
