"""jobs: cheaper writes for the queue — drop ix_jobs_mailbox_id_state, a prefix of
ix_jobs_mailbox_id_state_run_after that serves every lookup it served, and (PostgreSQL) leave
a fifth of each page free so that updates of unindexed columns are HOT

Every state change of a job rewrites an entry in each of its indexes; an update that touches no
indexed column (marking a request in flight, renewing a lease, recording the provider's ids)
can instead be a heap-only tuple update, which touches no index at all, but only if the new
row version fits on the same page. ``fillfactor`` applies to pages written from now on.
(docs/performance.md "The queue's writes")

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 02:40:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

FILLFACTOR = 80


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_mailbox_id_state")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE jobs SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE jobs RESET (fillfactor)")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_mailbox_id_state", ["mailbox_id", "state"], unique=False)
