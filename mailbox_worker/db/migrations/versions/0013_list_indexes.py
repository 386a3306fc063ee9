"""list indexes: an account's jobs and mailboxes in creation order (keyset pagination of
GET /v1/jobs and GET /v1/mailboxes), and its jobs by reference and by state

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 23:20:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_account_id_created_at_id", ["account_id", "created_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_jobs_account_id_reference_created_at_id",
            ["account_id", "reference", "created_at", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_jobs_account_id_state_created_at_id",
            ["account_id", "state", "created_at", "id"],
            unique=False,
        )
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_mailboxes_account_id_created_at_id",
            ["account_id", "created_at", "id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.drop_index("ix_mailboxes_account_id_created_at_id")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_account_id_state_created_at_id")
        batch_op.drop_index("ix_jobs_account_id_reference_created_at_id")
        batch_op.drop_index("ix_jobs_account_id_created_at_id")
