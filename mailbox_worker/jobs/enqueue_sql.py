"""The rows that come with new jobs, on PostgreSQL in one statement (``COMPANIONS``).

After the jobs' own ``INSERT`` (``JobStore``), each new job needs its content row, its
``enqueued`` event and a wake-up of the workers. On SQLite these are three statements; here
they are one: the two inserts are data-modifying CTEs (run once, to completion, whether or not
the query reads them) and the ``NOTIFY`` is sent on commit as from ``wakeups.announce_in``.
Two round trips fewer per enqueue (docs/performance.md "The enqueue request"). Built once, at
import.
"""

from __future__ import annotations

from sqlalchemy import String, TextualSelect, bindparam, column, text
from sqlalchemy.dialects.postgresql import ARRAY

from mailbox_worker.db.models import UTCDateTime
from mailbox_worker.jobs.wakeups import CHANNEL

COMPANIONS: TextualSelect = (
    text(
        f"""
WITH input AS (
    SELECT * FROM unnest(CAST(:job_ids AS varchar[]), CAST(:payloads AS text[]),
                         CAST(:states AS varchar[]), CAST(:event_ids AS varchar[]))
        AS input (job_id, payload, state, event_id)
),
contents AS (
    INSERT INTO job_contents (job_id, payload)
    SELECT input.job_id, CAST(input.payload AS json) FROM input
),
events AS (
    INSERT INTO job_events (job_id, at, kind, from_state, to_state, code, public_id)
    SELECT input.job_id, :now, 'state', NULL, input.state, 'enqueued', input.event_id
    FROM input
)
SELECT pg_notify('{CHANNEL}', :origin) AS notified
"""  # noqa: S608 - only a constant of wakeups.py is interpolated
    )
    .bindparams(
        bindparam("job_ids", type_=ARRAY(String)),
        bindparam("payloads", type_=ARRAY(String)),
        bindparam("states", type_=ARRAY(String)),
        bindparam("event_ids", type_=ARRAY(String)),
        bindparam("now", type_=UTCDateTime),
        bindparam("origin", type_=String),
    )
    .columns(column("notified", String))
)

__all__ = ["COMPANIONS"]
