"""mailbox pinned identity

Adds the account a mailbox is pinned to: ``identity_tenant`` (Entra ``tid``; NULL for Google)
and ``identity_subject`` (Entra ``oid``, Google ``sub``). Both are nullable and existing rows
are carried forward unchanged, with NULL: a mailbox connected before this revision has no
pinned account, and its next successful reconnect (still refused unless the address matches)
pins the account that signed in (docs/identity.md).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("identity_tenant", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("identity_subject", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.drop_column("identity_subject")
        batch_op.drop_column("identity_tenant")
