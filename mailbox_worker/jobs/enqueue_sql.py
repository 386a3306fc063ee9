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

from sqlalchemy import (
    BindParameter,
    Boolean,
    String,
    Table,
    TextualSelect,
    bindparam,
    column,
    text,
)
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


def _scalar_of(name: str) -> str:
    """The bind ``:name`` as one ``_element_type`` value."""
    return f"CAST(:{name} AS {_element_type(name).compile(_POSTGRESQL)})"


_NAMES = ", ".join(NEW_JOB_COLUMNS)
_RETURNED = ", ".join(f"inserted.{column.name}" for column in JOBS.columns)
_INPUT = f"""
input AS (
    SELECT * FROM unnest({", ".join(_array_of(name) for name in NEW_JOB_COLUMNS)},
                         CAST(:event_ids AS varchar[]))
        AS input ({_NAMES}, event_id)
)"""  # noqa: S608 - only constants of this module are interpolated
_INPUT_ONE = f"""
input AS (
    SELECT {", ".join(f"{_scalar_of(name)} AS {name}" for name in NEW_JOB_COLUMNS)},
           CAST(:event_id AS varchar) AS event_id
)"""
"""``_INPUT`` of one job, every column a bind of its own: no array to encode and decode."""


def _companions(given: str) -> str:
    """The contents, events and ``NOTIFY`` of the jobs ``inserted``, the payloads read
    ``FROM`` ``given`` (rows of ``id`` and ``payload``)."""
    return f"""
contents AS (
    -- The payloads go from their own binds straight into the insert, never through
    -- ``input``, which is materialised (it is read three times) and hashed for the joins:
    -- that copied each payload (mostly an invoice's base64) twice more.
    INSERT INTO job_contents (job_id, payload)
    SELECT given.id, given.payload
    FROM {given}
    -- Text, serialised by this package from a validated document: no parse here
    -- (migration 0017).
    WHERE given.id IN (SELECT inserted.id FROM inserted)
),
events AS (
    INSERT INTO job_events (job_id, at, kind, from_state, to_state, code, public_id)
    SELECT inserted.id, :now, 'state', NULL, inserted.state, 'enqueued', input.event_id
    FROM inserted JOIN input ON input.id = inserted.id
),
notified AS (
    SELECT pg_notify('{CHANNEL}', :origin) WHERE EXISTS (SELECT 1 FROM inserted)
)"""  # noqa: S608 - only constants of this module and of wakeups.py are interpolated


_COMPANIONS = _companions(
    "unnest(CAST(:id AS varchar[]), CAST(:payloads AS text[])) AS given (id, payload)"
)
_COMPANIONS_ONE = _companions(
    "(SELECT CAST(:id AS varchar) AS id, CAST(:payload AS text) AS payload) AS given"
)
_BINDS: tuple[BindParameter[Any], ...] = (
    *(bindparam(name, type_=ARRAY(_element_type(name))) for name in NEW_JOB_COLUMNS),
    bindparam("payloads", type_=ARRAY(String)),
    bindparam("event_ids", type_=ARRAY(String)),
    bindparam("now", type_=UTCDateTime),
    bindparam("origin", type_=String),
)

INSERT_JOBS: TextualSelect = (
    text(
        f"""
WITH {_INPUT},
inserted AS (
    INSERT INTO jobs ({_NAMES})
    SELECT {_NAMES} FROM input
    ON CONFLICT DO NOTHING
    RETURNING *
),{_COMPANIONS}
SELECT {_RETURNED} FROM inserted
-- Reading ``notified`` sends it (a SELECT in WITH runs only as far as it is read): once,
-- before the first row, as the filter of the whole result.
WHERE (SELECT count(*) FROM notified) >= 0
"""  # noqa: S608 - only constants of this module and of wakeups.py are interpolated
    )
    .bindparams(*_BINDS)
    .columns(*JOBS.columns)
)

INSERT_JOB_CHECKED: TextualSelect = (
    text(
        f"""
WITH {_INPUT_ONE},
checked AS (
    -- The mailbox as the intake saw it, locked as the locking read does
    -- (``JobStore.enqueue_for_mailboxes``); a row changed by a state change that commits
    -- while this waits for it is read again as it is now, and no longer matches.
    SELECT m.id FROM mailboxes AS m
    WHERE m.id = :expected_id AND m.account_id = :expected_account
      AND m.state = :expected_state
      AND m.address IS NOT DISTINCT FROM CAST(:expected_address AS varchar)
      AND CAST(m.capabilities AS jsonb) = CAST(:expected_capabilities AS jsonb)
      AND m.provider = :expected_provider
    FOR KEY SHARE OF m
),
verdict AS (
    SELECT count(*) = 1 AS unchanged FROM checked
),
inserted AS (
    INSERT INTO jobs ({_NAMES})
    SELECT {_NAMES} FROM input WHERE (SELECT unchanged FROM verdict)
    ON CONFLICT DO NOTHING
    RETURNING *
),{_COMPANIONS_ONE}
-- One row with ``unchanged`` and no job when nothing was inserted.
SELECT verdict.unchanged, {_RETURNED}
FROM verdict LEFT JOIN inserted ON true
WHERE (SELECT count(*) FROM notified) >= 0
"""  # noqa: S608 - only constants of this module and of wakeups.py are interpolated
    )
    .bindparams(
        *(bindparam(name, type_=_element_type(name)) for name in NEW_JOB_COLUMNS),
        bindparam("payload", type_=String),
        bindparam("event_id", type_=String),
        bindparam("now", type_=UTCDateTime),
        bindparam("origin", type_=String),
        bindparam("expected_id", type_=String),
        bindparam("expected_account", type_=String),
        bindparam("expected_state", type_=String),
        bindparam("expected_address", type_=String),
        bindparam("expected_capabilities", type_=String),
        bindparam("expected_provider", type_=String),
    )
    .columns(column("unchanged", Boolean), *JOBS.columns)
)
"""``INSERT_JOBS`` for one job the intake prepared from its mailbox read without a lock
(``JobStore._enqueue_one``): it inserts the job only if the mailbox is, under the lock, still
as it was read (``unchanged``); otherwise nothing. Every value is a bind of its own, not a
one-element array: 25 arrays fewer to encode (asyncpg checks each element's type, SQLAlchemy
runs each array's item processor), about 40 µs of CPU per request (docs/performance.md
"Sixth pass")."""

INSERT_JOBS_CHECKED: TextualSelect = (
    text(
        f"""
WITH {_INPUT},
expected AS (
    SELECT * FROM unnest(CAST(:expected_ids AS varchar[]), CAST(:expected_accounts AS varchar[]),
                         CAST(:expected_states AS varchar[]),
                         CAST(:expected_addresses AS varchar[]),
                         CAST(:expected_capabilities AS varchar[]),
                         CAST(:expected_providers AS varchar[]))
        AS expected (id, account_id, state, address, capabilities, provider)
),
checked AS (
    -- Each mailbox as the intake saw it, locked as the locking read does; a row changed by
    -- a state change that commits while this waits for it is read again as it is now
    -- (the join's condition included), and no longer matches.
    SELECT m.id FROM mailboxes AS m JOIN expected ON expected.id = m.id
    WHERE m.account_id = expected.account_id AND m.state = expected.state
      AND m.address IS NOT DISTINCT FROM expected.address
      AND CAST(m.capabilities AS jsonb) = CAST(expected.capabilities AS jsonb)
      AND m.provider = expected.provider
    FOR KEY SHARE OF m
),
verdict AS (
    SELECT count(*) = (SELECT count(*) FROM expected) AS unchanged FROM checked
),
inserted AS (
    INSERT INTO jobs ({_NAMES})
    SELECT {_NAMES} FROM input WHERE (SELECT unchanged FROM verdict)
    ON CONFLICT DO NOTHING
    RETURNING *
),{_COMPANIONS}
SELECT verdict.unchanged, {_RETURNED}
FROM verdict LEFT JOIN inserted ON true
WHERE (SELECT count(*) FROM notified) >= 0
"""  # noqa: S608 - only constants of this module and of wakeups.py are interpolated
    )
    .bindparams(
        *_BINDS,
        *(
            bindparam(f"expected_{name}", type_=ARRAY(String))
            for name in ("ids", "accounts", "states", "addresses", "capabilities", "providers")
        ),
    )
    .columns(column("unchanged", Boolean), *JOBS.columns)
)
"""``INSERT_JOB_CHECKED`` for several jobs, on several mailboxes read without a lock
(``JobStore._enqueue_unlocked``: requests that arrived together): all of them are inserted
only if every mailbox (each named once in the ``expected_*`` arrays) is still as read;
otherwise none."""

__all__ = ["INSERT_JOBS", "INSERT_JOBS_CHECKED", "INSERT_JOB_CHECKED", "NEW_JOB_COLUMNS"]
