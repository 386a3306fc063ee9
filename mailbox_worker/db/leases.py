"""Leases: the one queue discipline for rows that must be handled by one process at a time.

Outbox events and pending revocations are claimed the way jobs are: one statement marks up
to ``limit`` due rows as leased to ``owner`` until ``now + lease`` and returns them. A row
leased to somebody else is not due until that lease expires (its holder died or hung), so it
is handled by one process at a time and by somebody eventually. The holder then settles it
(deletes it or marks it done) or releases it with a later ``next_attempt_at``.

On PostgreSQL the due rows are picked ``FOR UPDATE SKIP LOCKED`` in a ``MATERIALIZED``
CTE: an ``UPDATE … WHERE id IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)`` may be planned
as a semi-join that re-runs the subquery and ignores the limit. SQLite has a single writer
(every transaction begins ``IMMEDIATE``, see ``db/engine.py``), which serialises claims.
"""

from __future__ import annotations

import datetime as dt
from typing import TypeVar

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.dml import ReturningUpdate

from mailbox_worker.db.models import OutboxEvent, PendingRevocation

Leased = TypeVar("Leased", OutboxEvent, PendingRevocation)


def not_leased(model: type[Leased], now: dt.datetime) -> ColumnElement[bool]:
    """Nobody holds the row: never leased, released, or its lease has expired."""
    return or_(model.lease_expires_at.is_(None), model.lease_expires_at <= now)


def claim_statement(
    model: type[Leased],
    due: ColumnElement[bool],
    order_by: InstrumentedAttribute[object] | None,
    limit: int,
    owner: str,
    now: dt.datetime,
    lease: dt.timedelta,
) -> ReturningUpdate[Leased]:
    """``UPDATE`` that leases up to ``limit`` rows matching ``due`` (and not leased) to
    ``owner`` until ``now + lease``, returning them."""
    pick = select(model.id).where(due, not_leased(model, now))
    if order_by is not None:
        pick = pick.order_by(order_by)
    picked = (
        pick.limit(limit)
        .with_for_update(skip_locked=True)
        .cte("picked")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    return (
        update(model)
        .where(and_(model.id.in_(select(picked.c.id)), not_leased(model, now)))
        .values(lease_owner=owner, lease_expires_at=now + lease)
        .returning(model)
    )


def held_by(model: type[Leased], row_id: object, owner: str) -> ColumnElement[bool]:
    """The row ``row_id`` while ``owner`` still holds its lease (updates of a holder that
    lost its lease must not overwrite what the next holder recorded)."""
    return and_(model.id == row_id, model.lease_owner == owner)
