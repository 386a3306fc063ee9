"""New jobs on PostgreSQL in one statement (``INSERT_JOBS``): the jobs, their rows, the wake-up.

The jobs' ``INSERT … ON CONFLICT DO NOTHING`` (a key the account already used conflicts, and
its row is not inserted) is a data-modifying CTE, and so are the content row and the
``enqueued`` event of each job it inserted (run once, to completion, whether or not the query
reads them; their foreign keys are checked at the statement's end, when the jobs are there).
The query returns the inserted jobs, every column, and sends the workers' ``NOTIFY`` on commit
as ``wakeups.announce_in`` does, once at least one job was inserted. On SQLite these are three
statements and no ``NOTIFY``. One round trip per enqueue where the jobs and their rows took
two, and four before that (docs/performance.md "The enqueue request", "Fifth pass"). The
input is one array per column (``unnest``), whatever the number of jobs. Built once, at
import.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import String, Table, TextualSelect, bindparam, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import TypeEngine

from mailbox_worker.db.models import Job, UTCDateTime
from mailbox_worker.jobs.wakeups import CHANNEL

JOBS = cast(Table, Job.__table__)
NEW_JOB_COLUMNS = (
    "id",
    "account_id",
    "mailbox_id",
    "mode",
    "state",
    "reference",
    "idempotency_key",
    "request_sha256",
    "message_id",
    "attempts",
    "transient_failures",
    "run_after",
    "send_at",
    "priority",
    "deadline",
    "recipient_count",
    "created_at",
    "updated_at",
)
"""The columns an enqueue sets (``JobStore._job_row``); the others take their defaults."""


_POSTGRESQL = postgresql.dialect()  # type: ignore[no-untyped-call]  # (SQLAlchemy's own)


def _element_type(name: str) -> TypeEngine[Any]:
    """The column's type, a string column's without its length: a cast to ``varchar(n)``
    (the bind's own, as asyncpg's dialect writes it, or this statement's) cuts a longer value
    short, where the insert's conversion into the column refuses it ("value too long"), as
    a plain insert does."""
    column_type = JOBS.c[name].type
    return String() if isinstance(column_type, String) else column_type


def _array_of(name: str) -> str:
    """The bind ``:name`` as an array of ``_element_type``."""
    return f"CAST(:{name} AS {_element_type(name).compile(_POSTGRESQL)}[])"


_NAMES = ", ".join(NEW_JOB_COLUMNS)
_RETURNED = ", ".join(f"inserted.{column.name}" for column in JOBS.columns)

INSERT_JOBS: TextualSelect = (
    text(
        f"""
WITH input AS (
    SELECT * FROM unnest({", ".join(_array_of(name) for name in NEW_JOB_COLUMNS)},
                         CAST(:payloads AS text[]), CAST(:event_ids AS varchar[]))
        AS input ({_NAMES}, payload, event_id)
),
inserted AS (
    INSERT INTO jobs ({_NAMES})
    SELECT {_NAMES} FROM input
    ON CONFLICT DO NOTHING
    RETURNING *
),
contents AS (
    INSERT INTO job_contents (job_id, payload)
    SELECT inserted.id, CAST(input.payload AS json)
    FROM inserted JOIN input ON input.id = inserted.id
),
events AS (
    INSERT INTO job_events (job_id, at, kind, from_state, to_state, code, public_id)
    SELECT inserted.id, :now, 'state', NULL, inserted.state, 'enqueued', input.event_id
    FROM inserted JOIN input ON input.id = inserted.id
),
notified AS (
    SELECT pg_notify('{CHANNEL}', :origin) WHERE EXISTS (SELECT 1 FROM inserted)
)
SELECT {_RETURNED} FROM inserted
-- Reading ``notified`` sends it (a SELECT in WITH runs only as far as it is read): once,
-- before the first row, as the filter of the whole result.
WHERE (SELECT count(*) FROM notified) >= 0
"""  # noqa: S608 - only constants of this module and of wakeups.py are interpolated
    )
    .bindparams(
        *(bindparam(name, type_=ARRAY(_element_type(name))) for name in NEW_JOB_COLUMNS),
        bindparam("payloads", type_=ARRAY(String)),
        bindparam("event_ids", type_=ARRAY(String)),
        bindparam("now", type_=UTCDateTime),
        bindparam("origin", type_=String),
    )
    .columns(*JOBS.columns)
)

__all__ = ["INSERT_JOBS", "NEW_JOB_COLUMNS"]
