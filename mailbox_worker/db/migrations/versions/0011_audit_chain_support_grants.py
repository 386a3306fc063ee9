"""audit chain and support grants: audit_events sealed into per-account hash chains,
support_grants for support access on the customer's request (PP-3, LU-5)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 22:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mailbox_worker.db.models

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "chain_position",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("previous_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("entry_hash", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_audit_events_chain_position"), ["chain_position"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_audit_events_account_id_chain_position"),
            ["account_id", "chain_position"],
            unique=False,
        )
    op.create_table(
        "support_grants",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("granted_by", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column(
            "created_at", mailbox_worker.db.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "expires_at", mailbox_worker.db.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("revoked_at", mailbox_worker.db.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_support_grants_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_grants")),
    )
    with op.batch_alter_table("support_grants", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_support_grants_account_id_expires_at"),
            ["account_id", "expires_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("support_grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_support_grants_account_id_expires_at"))
    op.drop_table("support_grants")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_account_id_chain_position"))
        batch_op.drop_index(batch_op.f("ix_audit_events_chain_position"))
        batch_op.drop_column("entry_hash")
        batch_op.drop_column("previous_hash")
        batch_op.drop_column("chain_position")
