"""The PostgreSQL claim's row is read by position (``jobs/claims.py``): the job's columns in
the table's order, the payload, the mailbox's columns, then the claim's counts, where
``PAYLOAD_AT`` and ``COUNTS_AT`` say."""

from __future__ import annotations

from mailbox_worker.jobs.claim_sql import (
    CLAIM,
    COUNTS_AT,
    JOB_COLUMNS,
    MAILBOX_COLUMNS,
    MAILBOX_PREFIX,
    PAYLOAD_AT,
)


def test_the_claims_row_is_laid_out_as_its_positions_say() -> None:
    names = [column.name for column in CLAIM.selected_columns]
    assert names[:PAYLOAD_AT] == JOB_COLUMNS
    assert names[PAYLOAD_AT] == "payload"
    assert names[PAYLOAD_AT + 1 : COUNTS_AT] == [MAILBOX_PREFIX + name for name in MAILBOX_COLUMNS]
    assert names[COUNTS_AT:] == ["locked", "waiting", "due", "next_due"]
