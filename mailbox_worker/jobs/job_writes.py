"""The worker's writes to the jobs it holds, in batches: ``start`` (a provider request is
about to leave) and ``leave_running`` (a job leaves ``running``: finished, retried later or
held). ``JobQueue`` gathers the writes of jobs that arrive together (``jobs/coalescing.py``).

Each write is one guarded ``UPDATE`` (``transitions.held_by``: still ``running`` under this
lease), its ``job_events`` row and, when the new state is announced, its outbox event
(``transitions.announce``). On PostgreSQL a whole batch is ONE statement — the update in a
data-modifying CTE that the inserts read from, every column of the batch an array parameter —
sent outside an explicit transaction: one round-trip and one (implicit) transaction for the
batch. The inserts read the update's ``RETURNING``, so a job's row lock is taken before its
outbox id is drawn, as ``events.outbox.outbox_row`` requires. On SQLite (no data-modifying
CTEs) a batch is three statements in one transaction: the update for every job of the batch
(``UPDATE … FROM json_each``, its ``RETURNING`` naming the jobs it moved), then their events,
then their outbox events, each one ``executemany``. Every statement is built once, at import.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BindParameter,
    DateTime,
    Integer,
    String,
    Text,
    TextualSelect,
    bindparam,
    column,
    func,
    insert,
    text,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from mailbox_worker.clock import new_id
from mailbox_worker.db.models import Job, JobEvent, OutboxEvent, UTCDateTime, keyed_state
from mailbox_worker.events.types import EVENT_ID_PREFIX, EventType
from mailbox_worker.jobs.transitions import ANNOUNCED_STATES
from mailbox_worker.states import TERMINAL, JobState

RUNNING = JobState.RUNNING.value
EVENT_PREFIX = "jev"

# PostgreSQL: one statement writes a whole batch; each column of the batch is an array
# parameter, ``unnest`` turns them back into rows.
_LEAVE_INPUT = {
    "job_id": "varchar",
    "owner": "varchar",
    "state": "varchar",
    "code": "varchar",
    "message": "text",
    "finished_at": "timestamptz",
    "run_after": "timestamptz",
    "failures": "integer",
    "provider_message_id": "varchar",
    "provider_draft_id": "varchar",
    "web_link": "text",
    "provider_status": "integer",
    "worker": "varchar",
    "event_id": "varchar",
    "outbox_id": "varchar",
    "kind": "varchar",
    "now": "timestamptz",
    "at": "timestamptz",
}
_START_INPUT = {
    "job_id": "varchar",
    "owner": "varchar",
    "worker": "varchar",
    "event_id": "varchar",
    "now": "timestamptz",
    "at": "timestamptz",
}
_ARRAY_TYPES: dict[str, ARRAY[Any]] = {
    "varchar": ARRAY(String),
    "text": ARRAY(Text),
    "integer": ARRAY(Integer),
    "timestamptz": ARRAY(DateTime(timezone=True)),
}


def _unnest(columns: dict[str, str]) -> str:
    arrays = ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in columns.items())
    return f"SELECT * FROM unnest({arrays}) AS input ({', '.join(columns)})"  # noqa: S608


def _binds(columns: dict[str, str]) -> list[BindParameter[Any]]:
    return [bindparam(name, type_=_ARRAY_TYPES[kind]) for name, kind in columns.items()]


# ``models.keyed_state()`` in these statements' text: each input row's job read by its key,
# never through an index on the state (with stale statistics the generic plan read every
# running job once for each job of the batch: 19.8 -> 51.7 ms a batch; docs/performance.md
# "Eighteenth pass"). As ``+jobs.state`` does for SQLite below.
_NOT_BY_STATE = "(jobs.state || '')"

LEAVE_RUNNING_POSTGRESQL: TextualSelect = (
    text(
        f"""
WITH input AS ({_unnest(_LEAVE_INPUT)}),
moved AS (
    UPDATE jobs SET
        state = input.state, lease_owner = NULL, lease_expires_at = NULL,
        in_flight_since = NULL, updated_at = input.now, last_error_code = input.code,
        last_error_message = input.message,
        finished_at = coalesce(input.finished_at, jobs.finished_at),
        run_after = coalesce(input.run_after, jobs.run_after),
        transient_failures = jobs.transient_failures + input.failures,
        provider_message_id = coalesce(input.provider_message_id, jobs.provider_message_id),
        provider_draft_id = coalesce(input.provider_draft_id, jobs.provider_draft_id),
        web_link = coalesce(input.web_link, jobs.web_link)
    FROM input
    WHERE jobs.id = input.job_id AND {_NOT_BY_STATE} = '{RUNNING}'
      AND jobs.lease_owner = input.owner
    RETURNING jobs.id, jobs.account_id, jobs.mailbox_id, jobs.reference,
              jobs.provider_message_id, jobs.provider_draft_id, input.state AS to_state,
              input.code, input.message, input.provider_status, input.worker, input.event_id,
              input.outbox_id, input.kind, input.at
),
event AS (
    INSERT INTO job_events (job_id, at, kind, from_state, to_state, code, detail,
                            provider_status, worker, public_id)
    SELECT moved.id, moved.at, 'state', '{RUNNING}', moved.to_state, moved.code, moved.message,
           moved.provider_status, moved.worker, moved.event_id
    FROM moved
),
announced AS (
    INSERT INTO outbox_events (public_id, account_id, kind, payload, created_at, attempts,
                               next_attempt_at, ordering_key)
    SELECT moved.outbox_id, moved.account_id, moved.kind,
           json_build_object('job_id', moved.id, 'mailbox_id', moved.mailbox_id,
                             'reference', moved.reference, 'state', moved.to_state,
                             'code', moved.code,
                             'provider_message_id', moved.provider_message_id,
                             'provider_draft_id', moved.provider_draft_id),
           moved.at, 0, moved.at, moved.id
    FROM moved
    WHERE moved.kind IS NOT NULL
)
SELECT moved.id FROM moved
"""  # noqa: S608 - only constants of this module are interpolated
    )
    .bindparams(*_binds(_LEAVE_INPUT))
    .columns(column("id", String))
)

START_POSTGRESQL: TextualSelect = (
    text(
        f"""
WITH input AS ({_unnest(_START_INPUT)}),
started AS (
    UPDATE jobs SET in_flight_since = input.now, attempts = jobs.attempts + 1,
                    updated_at = input.now
    FROM input
    WHERE jobs.id = input.job_id AND {_NOT_BY_STATE} = '{RUNNING}'
      AND jobs.lease_owner = input.owner AND jobs.lease_expires_at > input.now
    RETURNING jobs.id, input.at, input.worker, input.event_id
),
event AS (
    INSERT INTO job_events (job_id, at, kind, code, worker, public_id)
    SELECT started.id, started.at, 'attempt', 'started', started.worker, started.event_id
    FROM started
)
SELECT started.id FROM started
"""  # noqa: S608 - only constants of this module are interpolated
    )
    .bindparams(*_binds(_START_INPUT))
    .columns(column("id", String))
)

# SQLite: a batch is an UPDATE … FROM json_each(:input) … RETURNING (one row of the input per
# job, its values as JSON: text, numbers, null; times in the form SQLAlchemy stores them),
# then the events of the jobs it moved in one executemany, and their outbox events in another.
_X = "json_extract(input.value, '$.{}')".format
START_SQLITE: TextualSelect = text(
    f"""
UPDATE jobs SET in_flight_since = {_X("now")}, attempts = jobs.attempts + 1,
                updated_at = {_X("now")}
FROM json_each(:input) AS input
-- The unary + keeps the index on state out of the plan: read the input, then each job by its
-- key (without it SQLite scanned every running job against the whole input).
WHERE jobs.id = {_X("job_id")} AND +jobs.state = '{RUNNING}' AND jobs.lease_owner = {_X("owner")}
  AND jobs.lease_expires_at > {_X("now")}
RETURNING jobs.id
"""  # noqa: S608 - only constants of this module are interpolated
).columns(column("id", String))
LEAVE_RUNNING_SQLITE: TextualSelect = text(
    f"""
UPDATE jobs SET
    state = {_X("state")}, lease_owner = NULL, lease_expires_at = NULL,
    in_flight_since = NULL, updated_at = {_X("now")}, last_error_code = {_X("code")},
    last_error_message = {_X("message")},
    finished_at = coalesce({_X("finished_at")}, jobs.finished_at),
    run_after = coalesce({_X("run_after")}, jobs.run_after),
    transient_failures = jobs.transient_failures + {_X("failures")},
    provider_message_id = coalesce({_X("provider_message_id")}, jobs.provider_message_id),
    provider_draft_id = coalesce({_X("provider_draft_id")}, jobs.provider_draft_id),
    web_link = coalesce({_X("web_link")}, jobs.web_link)
FROM json_each(:input) AS input
-- The unary +: as in START_SQLITE.
WHERE jobs.id = {_X("job_id")} AND +jobs.state = '{RUNNING}' AND jobs.lease_owner = {_X("owner")}
RETURNING jobs.id, jobs.account_id, jobs.mailbox_id, jobs.reference, jobs.provider_message_id,
          jobs.provider_draft_id
"""  # noqa: S608 - only constants of this module are interpolated
).columns(
    column("id", String),
    column("account_id", String),
    column("mailbox_id", String),
    column("reference", String),
    column("provider_message_id", String),
    column("provider_draft_id", String),
)


def _sqlite_time_processor() -> Callable[[Any], Any]:
    """How SQLAlchemy writes a time to SQLite, so that the statements above compare like
    with like (and a time written here reads back as one written by the ORM)."""
    dialect = sqlite.dialect()
    process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert process is not None  # UTCDateTime processes every value
    return process


_SQLITE_TIME = _sqlite_time_processor()
_SQLITE_TIMES = ("now", "finished_at", "run_after")
_held = (
    (Job.id == bindparam("job_id"))
    & (keyed_state() == JobState.RUNNING)
    & (Job.lease_owner == bindparam("owner"))
)
RECORD_IDS = (
    update(Job)
    .where(_held)
    .values(
        provider_message_id=func.coalesce(
            bindparam("provider_message_id", type_=String), Job.provider_message_id
        ),
        provider_draft_id=func.coalesce(
            bindparam("provider_draft_id", type_=String), Job.provider_draft_id
        ),
        web_link=func.coalesce(bindparam("web_link", type_=Text), Job.web_link),
    )
)
INSERT_EVENT = insert(JobEvent)
INSERT_OUTBOX = insert(OutboxEvent)


def leave_values(
    *,
    state: str,
    now: dt.datetime,
    code: str | None,
    message: str | None,
    run_after: dt.datetime | None = None,
    failure: bool = False,
    provider_message_id: str | None = None,
    provider_draft_id: str | None = None,
    web_link: str | None = None,
) -> dict[str, Any]:
    """The new values of a job leaving ``running`` for ``state`` (``leave_running``'s
    ``values``): its lease and in-flight mark cleared, its last error set (or cleared),
    ``finished_at`` for a terminal state, ``run_after`` when given, the provider's ids when
    given (None keeps what the job has), one more transient failure if ``failure``."""
    return {
        "state": str(state),
        "now": now,
        "code": code,
        "message": message,
        "finished_at": now if state in TERMINAL else None,
        "run_after": run_after,
        "failures": 1 if failure else 0,
        "provider_message_id": provider_message_id,
        "provider_draft_id": provider_draft_id,
        "web_link": web_link,
    }


@dataclass(frozen=True)
class Start:
    """Mark ``job_id`` in flight if it is still ``running`` under ``owner`` and the lease has
    not expired at ``now``, with its ``attempt started`` event (naming ``worker``) made ``at``."""

    job_id: str
    owner: str
    worker: str
    now: dt.datetime
    at: dt.datetime
    event_id: str = field(default_factory=lambda: new_id(EVENT_PREFIX))


@dataclass(frozen=True)
class Leave:
    """Apply ``values`` (``leave_values``) to ``job_id`` if it is still ``running`` under
    ``owner``, with its state event (naming ``worker``) and, for an announced state, its
    ``job.<state>`` outbox event, both made ``at``."""

    job_id: str
    owner: str
    values: Mapping[str, Any]
    worker: str
    provider_status: int | None
    at: dt.datetime
    event_id: str = field(default_factory=lambda: new_id(EVENT_PREFIX))
    outbox_id: str = field(default_factory=lambda: new_id(EVENT_ID_PREFIX))

    @property
    def kind(self) -> str | None:
        """The outbox event announcing the new state; None for a state not announced."""
        state = str(self.values["state"])
        return EventType(f"job.{state}").value if state in ANNOUNCED_STATES else None


async def start(connection: AsyncConnection, starts: Sequence[Start]) -> list[bool]:
    """Write each of ``starts`` (at most one per job); whether each one's lease still held."""
    if connection.dialect.name == "postgresql":
        columns: dict[str, list[Any]] = {name: [] for name in _START_INPUT}
        for each in starts:
            for name in _START_INPUT:
                columns[name].append(getattr(each, name))
        started = set((await connection.execute(START_POSTGRESQL, columns)).scalars())
        return [each.job_id in started for each in starts]
    return await _start_sqlite(connection, starts)


async def leave_running(connection: AsyncConnection, leaves: Sequence[Leave]) -> list[bool]:
    """Write each of ``leaves`` (at most one per job); whether each one's lease still held
    (False: nothing written for it)."""
    if connection.dialect.name == "postgresql":
        columns: dict[str, list[Any]] = {name: [] for name in _LEAVE_INPUT}
        for each in leaves:
            row = {
                **each.values,
                "job_id": each.job_id,
                "owner": each.owner,
                "worker": each.worker,
                "provider_status": each.provider_status,
                "at": each.at,
                "event_id": each.event_id,
                "outbox_id": each.outbox_id,
                "kind": each.kind,
            }
            for name in _LEAVE_INPUT:
                columns[name].append(row[name])
        moved = set((await connection.execute(LEAVE_RUNNING_POSTGRESQL, columns)).scalars())
        return [each.job_id in moved for each in leaves]
    return await _leave_running_sqlite(connection, leaves)


async def record_ids(
    connection: AsyncConnection,
    job_id: str,
    owner: str,
    provider_message_id: str | None,
    provider_draft_id: str | None,
    web_link: str | None,
) -> bool:
    """Store the provider's ids given (None keeps what the job has) on the job if it is still
    ``running`` under ``owner``: one statement."""
    binds = {
        "job_id": job_id,
        "owner": owner,
        "provider_message_id": provider_message_id,
        "provider_draft_id": provider_draft_id,
        "web_link": web_link,
    }
    return bool((await connection.execute(RECORD_IDS, binds)).rowcount)


def _sqlite_input(rows: list[dict[str, Any]]) -> str:
    """The JSON of ``rows`` for ``json_each(:input)``, times as SQLite holds them."""
    for row in rows:
        for name in _SQLITE_TIMES:
            if row.get(name) is not None:
                row[name] = _SQLITE_TIME(row[name])
    return json.dumps(rows)


async def _start_sqlite(connection: AsyncConnection, starts: Sequence[Start]) -> list[bool]:
    rows = [{"job_id": each.job_id, "owner": each.owner, "now": each.now} for each in starts]
    started = set(
        (await connection.execute(START_SQLITE, {"input": _sqlite_input(rows)})).scalars()
    )
    events = [
        {
            "job_id": each.job_id,
            "at": each.at,
            "kind": "attempt",
            "code": "started",
            "worker": each.worker,
            "public_id": each.event_id,
        }
        for each in starts
        if each.job_id in started
    ]
    if events:
        await connection.execute(INSERT_EVENT, events)
    return [each.job_id in started for each in starts]


async def _leave_running_sqlite(connection: AsyncConnection, leaves: Sequence[Leave]) -> list[bool]:
    rows = [{**each.values, "job_id": each.job_id, "owner": each.owner} for each in leaves]
    returned = await connection.execute(LEAVE_RUNNING_SQLITE, {"input": _sqlite_input(rows)})
    moved = {row.id: row for row in returned}
    events, announcements = [], []
    for each in leaves:
        job = moved.get(each.job_id)
        if job is None:
            continue
        values = each.values
        state = str(values["state"])
        events.append(
            {
                "job_id": each.job_id,
                "at": each.at,
                "kind": "state",
                "from_state": RUNNING,
                "to_state": state,
                "code": values["code"],
                "detail": values["message"],
                "provider_status": each.provider_status,
                "worker": each.worker,
                "public_id": each.event_id,
            }
        )
        if each.kind is not None:
            payload = {
                "job_id": job.id,
                "mailbox_id": job.mailbox_id,
                "reference": job.reference,
                "state": state,
                "code": values["code"],
                "provider_message_id": job.provider_message_id,
                "provider_draft_id": job.provider_draft_id,
            }
            announcements.append(
                {
                    "public_id": each.outbox_id,
                    "account_id": job.account_id,
                    "kind": each.kind,
                    "payload": payload,
                    "created_at": each.at,
                    "attempts": 0,
                    "next_attempt_at": each.at,
                    "ordering_key": job.id,
                }
            )
    if events:
        await connection.execute(INSERT_EVENT, events)
    if announcements:
        await connection.execute(INSERT_OUTBOX, announcements)
    return [each.job_id in moved for each in leaves]


__all__ = ["Leave", "Start", "leave_running", "leave_values", "record_ids", "start"]
