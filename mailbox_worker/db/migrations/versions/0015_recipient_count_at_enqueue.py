"""jobs: ``recipient_count`` is counted when a job is enqueued, not at every claim; count it
now for the jobs enqueued before (those not yet claimed: ``queued`` and ``held``)

A claim used to parse each chosen job's stored message to count its envelope recipients
(To, Cc, Bcc: ``jobs/limits.py`` ``recipient_count``), the whole message with its attachments'
base64, once per claim of the job. The count never changes, so the intake stores it with the
job, and a claim reads the column (docs/performance.md "The claim"). A job claimed before this
migration already holds its count, stored by that claim.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 05:30:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

NOT_YET_CLAIMED = "('queued', 'held')"

POSTGRESQL = f"""
UPDATE jobs SET recipient_count = greatest(1, (
    SELECT coalesce(sum(jsonb_array_length(CAST(content.payload AS jsonb) -> field)), 0)
    FROM job_contents AS content, unnest(ARRAY['to', 'cc', 'bcc']) AS field
    WHERE content.job_id = jobs.id
      AND jsonb_typeof(CAST(content.payload AS jsonb) -> field) = 'array'
))
WHERE state IN {NOT_YET_CLAIMED}
  AND EXISTS (SELECT 1 FROM job_contents AS content WHERE content.job_id = jobs.id)
"""  # noqa: S608 - only constants of this module are interpolated

# json_array_length: NULL for a missing member, 0 for one that is not an array.
SQLITE = f"""
UPDATE jobs SET recipient_count = max(1, (
    SELECT coalesce(json_array_length(content.payload, '$.to'), 0)
         + coalesce(json_array_length(content.payload, '$.cc'), 0)
         + coalesce(json_array_length(content.payload, '$.bcc'), 0)
    FROM job_contents AS content
    WHERE content.job_id = jobs.id
))
WHERE state IN {NOT_YET_CLAIMED}
  AND EXISTS (SELECT 1 FROM job_contents AS content WHERE content.job_id = jobs.id)
"""  # noqa: S608 - only constants of this module are interpolated


def upgrade() -> None:
    op.execute(POSTGRESQL if op.get_bind().dialect.name == "postgresql" else SQLITE)


def downgrade() -> None:
    """Nothing to undo: a claim by the older code counts the recipients again."""
