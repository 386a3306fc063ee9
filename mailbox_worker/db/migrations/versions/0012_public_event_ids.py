"""public event ids

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 23:10:00.000000

Adds ``public_id`` to ``outbox_events`` (``evt_…``, the id the invoicing app receives) and to
``job_events`` (``jev_…``, the id ``GET /v1/jobs/{id}`` shows), unique, and gives every
existing row one made like ``clock.new_id``'s: the prefix and 32 random hex digits. The
integer ``id`` of both stays: it orders the rows.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

TABLES = {"outbox_events": "evt_", "job_events": "jev_"}


def _random_hex(dialect: str) -> str:
    """SQL for 32 random lowercase hex digits, a fresh value on each row, in one UPDATE (a
    table may be large, so the rows are not read into Python)."""
    if dialect == "postgresql":
        return "replace(gen_random_uuid()::text, '-', '')"
    return "lower(hex(randomblob(16)))"


def upgrade() -> None:
    connection = op.get_bind()
    random_hex = _random_hex(connection.dialect.name)
    for table, prefix in TABLES.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("public_id", sa.String(length=40), nullable=True))
        rows = sa.table(table, sa.column("public_id", sa.String()))
        fresh = sa.literal(prefix, sa.String()) + sa.literal_column(random_hex, sa.String())
        connection.execute(sa.update(rows).values(public_id=fresh))
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("public_id", existing_type=sa.String(length=40), nullable=False)
            batch_op.create_index(batch_op.f(f"ix_{table}_public_id"), ["public_id"], unique=True)


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_public_id"))
            batch_op.drop_column("public_id")
