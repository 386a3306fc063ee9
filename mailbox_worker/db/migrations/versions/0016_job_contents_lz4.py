"""job_contents: (PostgreSQL) compress ``payload`` with lz4, not pglz (or, on a server built
without lz4, do not try to compress it)

An invoice's payload is mostly its attachments' base64, and a PDF's bytes are compressed
already. PostgreSQL's default TOAST compression (pglz) tried each payload, gave up and stored
it whole, after spending most of the insert on the attempt. Measured on PostgreSQL 15, one
insert of a payload with a 100 KB PDF: pglz 4.3 ms, lz4 1.4 ms, no compression (``STORAGE
EXTERNAL``) 1.6 ms, the stored size the same; with 52 KB of HTML added, pglz 6.4 ms and nothing
saved (its rule: 25 % or give up), lz4 1.9 ms and 186 KB stored as 135 KB. lz4 comes with
PostgreSQL 14 and later when built with it (``pg_settings`` lists it among
``default_toast_compression``'s values); otherwise the column stops trying. Rows written from
now on; those written before keep pglz (docs/performance.md "Fourth pass"). A dump of such a
database carries ``SET COMPRESSION lz4`` and restores only on a server that has lz4. SQLite
has no TOAST: nothing to do there.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 11:45:00.000000
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

HAS_LZ4 = text(
    "SELECT EXISTS (SELECT 1 FROM pg_settings "
    "WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals))"
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    if bind.scalar(HAS_LZ4):
        op.execute("ALTER TABLE job_contents ALTER COLUMN payload SET COMPRESSION lz4")
    else:
        op.execute("ALTER TABLE job_contents ALTER COLUMN payload SET STORAGE EXTERNAL")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    if bind.scalar(HAS_LZ4):
        op.execute("ALTER TABLE job_contents ALTER COLUMN payload SET COMPRESSION default")
    op.execute("ALTER TABLE job_contents ALTER COLUMN payload SET STORAGE EXTENDED")
