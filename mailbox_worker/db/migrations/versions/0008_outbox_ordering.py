"""outbox ordering key

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 20:30:00.000000

Adds ``outbox_events.ordering_key`` (events with the same key are delivered in order) and
fills it for the events still waiting: the job's id for job events, else the mailbox's id,
the key ``events.outbox.outbox_row`` gives new events.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ordering_key", sa.String(length=80), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_outbox_events_ordering_key_id"), ["ordering_key", "id"], unique=False
        )
    outbox = sa.table(
        "outbox_events",
        sa.column("id", sa.BigInteger()),
        sa.column("payload", sa.JSON()),
        sa.column("delivered_at", sa.DateTime()),
        sa.column("ordering_key", sa.String()),
    )
    connection = op.get_bind()
    # JSON access differs between the backends; the waiting events are few, so read them here.
    waiting = connection.execute(
        sa.select(outbox.c.id, outbox.c.payload).where(outbox.c.delivered_at.is_(None))
    ).all()
    for event_id, payload in waiting:
        key = _key(payload)
        if key is not None:
            connection.execute(
                sa.update(outbox).where(outbox.c.id == event_id).values(ordering_key=key)
            )


def _key(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return None
    for name in ("job_id", "mailbox_id"):
        value = payload.get(name)
        if isinstance(value, str) and value:
            return value[:80]
    return None


def downgrade() -> None:
    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_events_ordering_key_id"))
        batch_op.drop_column("ordering_key")
