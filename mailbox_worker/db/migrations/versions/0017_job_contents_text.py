"""job_contents: (PostgreSQL) ``payload`` as ``text``, not ``json``

The server parsed every payload on insert to check it was JSON, although only this package
writes it, serialised by ``json.dumps`` from a document it has validated. For an invoice the
payload is mostly its attachments' base64, and the parse was about a third of the row's
insert: 500 payloads with a 10 KB PDF each, 114 µs a row as ``json``, 77 µs as ``text``
(both lz4-compressed, migration 0016; docs/performance.md "Sixth pass"). The stored text is
unchanged (``json`` keeps its input verbatim). Changing a column's type resets its
compression, so the column's compression and storage (0016's) are read first and set again.
The models read and write it with ``JSONText``. SQLite's column is text already: nothing to do.

Deploying it (docs/deploy.md "Migrations that need the old processes stopped"): PostgreSQL
has no direct cast from ``json`` to ``text``, so the table is rewritten under an exclusive lock
(about 4 s per 190 MB of payloads on the development machine, in either direction; enqueues
and claims wait meanwhile, and the table needs its size again in free disk). Processes of the
release before read ``payload`` as ``json``: once this has run they would get its text, and
every job they claimed would fail and be retried until they were replaced. Stop them first.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 16:00:00.000000
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


SETTINGS = text(
    "SELECT CAST(attcompression AS text), CAST(attstorage AS text) FROM pg_attribute "
    "WHERE attrelid = CAST('job_contents' AS regclass) AND attname = 'payload'"
)
COMPRESSIONS = {"l": "lz4", "p": "pglz", "": "default"}
STORAGES = {"x": "EXTENDED", "e": "EXTERNAL", "m": "MAIN", "p": "PLAIN"}


def _change_type(to: str) -> None:
    """``payload`` to type ``to``, its compression and storage as they were."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    compression, storage = bind.execute(SETTINGS).one()
    op.execute(
        f"ALTER TABLE job_contents ALTER COLUMN payload TYPE {to} USING payload::{to}, "
        f"ALTER COLUMN payload SET COMPRESSION {COMPRESSIONS[compression or '']}, "
        f"ALTER COLUMN payload SET STORAGE {STORAGES[storage]}"
    )


def upgrade() -> None:
    _change_type("text")


def downgrade() -> None:
    _change_type("json")
