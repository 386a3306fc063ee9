"""outbox and revocation leases

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mailbox_worker.db.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLES = ("outbox_events", "pending_revocations")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("lease_owner", sa.String(length=80), nullable=True))
            batch_op.add_column(
                sa.Column(
                    "lease_expires_at",
                    mailbox_worker.db.models.UTCDateTime(timezone=True),
                    nullable=True,
                )
            )


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("lease_expires_at")
            batch_op.drop_column("lease_owner")
