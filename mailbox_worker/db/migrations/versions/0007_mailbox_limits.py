"""mailbox limits: per-mailbox concurrency, rate, daily cap and pause; job priority,
recipient count and claim time

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 20:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mailbox_worker.db.models

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_concurrency", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rate_per_minute", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("daily_recipient_cap", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "paused_until", mailbox_worker.db.models.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(sa.Column("pause_reason", sa.String(length=20), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("priority", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(
            sa.Column("recipient_count", sa.Integer(), server_default="1", nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "claimed_at", mailbox_worker.db.models.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.create_index(
            "ix_jobs_mailbox_id_state_run_after", ["mailbox_id", "state", "run_after"]
        )
        batch_op.create_index("ix_jobs_mailbox_id_claimed_at", ["mailbox_id", "claimed_at"])
        batch_op.create_index(
            "ix_jobs_claim_order",
            ["mailbox_id", "state", sa.text("priority DESC"), "run_after", "created_at"],
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_claim_order")
        batch_op.drop_index("ix_jobs_mailbox_id_claimed_at")
        batch_op.drop_index("ix_jobs_mailbox_id_state_run_after")
        batch_op.drop_column("claimed_at")
        batch_op.drop_column("recipient_count")
        batch_op.drop_column("priority")
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.drop_column("pause_reason")
        batch_op.drop_column("paused_until")
        batch_op.drop_column("daily_recipient_cap")
        batch_op.drop_column("rate_per_minute")
        batch_op.drop_column("max_concurrency")
