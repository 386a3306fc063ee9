"""Queue layouts at the database's speed: what a drained job costs PostgreSQL in each table
layout, with the least client (raw asyncpg, one statement per step for a whole batch), against
pgqueuer in the same run. It measures the data model apart from the engine's code
(docs/performance.md "Twelfth pass"). Never passes or fails on time.

    .venv/bin/python bench/queue_layouts.py [--jobs 10000] [--workers 4] [--batch 100]
        [--rounds 2]

Every layout drains the same way: ``--workers`` connections each lease ``--batch`` jobs with
their transition's event (one statement, its own commit, as before any provider request),
mark them in flight with the attempt's event (one statement, its own commit), and finish them
with their event and the outbox row of the integrator's callback (one statement). Those are
the writes promise 1 needs per job (docs/architecture.md). The claim takes the oldest due jobs
whatever their mailbox: promise 5's per-mailbox limits (concurrency, rate, daily cap), which
the daemon's claim applies under the mailboxes' row locks, are not here, and neither is their
cost.

Layouts:

* ``floor``: the queue's rows alone (two indexes); the fewest writes promise 1 allows.
* ``queue+record@finish``: a narrow queue table whose row is deleted at the finish, and the
  job's record (five indexes: the key, the idempotency key and three for the API's lists)
  updated once, at the finish.
* ``queue+record@claim+finish``: the same, the record also updated at the claim (so that it
  says ``running`` without looking at the queue).
* ``jobs-today``: one ``jobs`` table holding both, with the engine's nine indexes and
  ``job_events``' four (migrations up to 0019), updated at the lease, the mark and the finish.

PostgreSQL runs at MAILBOX_WORKER_TEST_POSTGRES_URL (a scratch database per drain, dropped);
pgqueuer needs the ``bench`` extra (requirements/bench.txt).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import time
import uuid
from dataclasses import dataclass

import asyncpg
import queue_references
from _daemon import postgres_postmaster
from queue_references import PAYLOAD, CpuMeter, Drained

EVENTS_AND_OUTBOX = """
CREATE TABLE IF NOT EXISTS floor_events (
    id bigserial PRIMARY KEY, job_id text NOT NULL, at timestamptz NOT NULL, kind text NOT NULL
);
CREATE INDEX IF NOT EXISTS floor_events_job ON floor_events (job_id, id);
CREATE TABLE IF NOT EXISTS floor_outbox (
    id bigserial PRIMARY KEY, job_id text NOT NULL, kind text NOT NULL,
    created_at timestamptz NOT NULL
);
"""
QUEUE_COLUMNS = """
    id text PRIMARY KEY,
    state text NOT NULL DEFAULT 'queued',
    payload bytea,
    run_after timestamptz NOT NULL DEFAULT now(),
    lease_owner text,
    lease_expires_at timestamptz,
    in_flight_since timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    finished_at timestamptz"""
"""A queued job's columns: the queue's own table holds these, today's ``jobs`` more."""
QUEUE = f"""
CREATE TABLE IF NOT EXISTS floor_jobs ({QUEUE_COLUMNS}
);
CREATE INDEX IF NOT EXISTS floor_jobs_due ON floor_jobs (run_after, id) WHERE state = 'queued';
"""
RECORDS = """
CREATE TABLE IF NOT EXISTS floor_records (
    id text PRIMARY KEY, state text NOT NULL DEFAULT 'queued',
    account_id text NOT NULL DEFAULT 'acc_1', idempotency_key text, reference text,
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz,
    finished_at timestamptz
) WITH (fillfactor = 80);
CREATE UNIQUE INDEX IF NOT EXISTS floor_records_key ON floor_records (account_id, idempotency_key);
CREATE INDEX IF NOT EXISTS floor_records_new ON floor_records (account_id, created_at, id);
CREATE INDEX IF NOT EXISTS floor_records_reference
    ON floor_records (account_id, reference, created_at, id);
CREATE INDEX IF NOT EXISTS floor_records_state ON floor_records (account_id, state, created_at, id);
"""
JOBS_TODAY = f"""
CREATE TABLE IF NOT EXISTS floor_jobs ({QUEUE_COLUMNS},
    account_id text NOT NULL DEFAULT 'acc_1', mailbox_id text NOT NULL DEFAULT 'mbx_1',
    idempotency_key text, reference text, priority integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(), claimed_at timestamptz
) WITH (fillfactor = 80);
CREATE UNIQUE INDEX IF NOT EXISTS j1 ON floor_jobs (account_id, idempotency_key);
CREATE INDEX IF NOT EXISTS j2 ON floor_jobs (state, run_after);
CREATE INDEX IF NOT EXISTS j3 ON floor_jobs (mailbox_id, state, run_after);
CREATE INDEX IF NOT EXISTS j4 ON floor_jobs (mailbox_id, claimed_at);
CREATE INDEX IF NOT EXISTS j5 ON floor_jobs (account_id, created_at, id);
CREATE INDEX IF NOT EXISTS j6 ON floor_jobs (account_id, reference, created_at, id);
CREATE INDEX IF NOT EXISTS j7 ON floor_jobs (account_id, state, created_at, id);
CREATE INDEX IF NOT EXISTS j8
    ON floor_jobs (mailbox_id, state, priority DESC, run_after, created_at);
ALTER TABLE floor_events ADD COLUMN IF NOT EXISTS public_id text NOT NULL
    DEFAULT 'jev_' || replace(CAST(gen_random_uuid() AS text), '-', '');
CREATE UNIQUE INDEX IF NOT EXISTS floor_events_public ON floor_events (public_id);
CREATE INDEX IF NOT EXISTS floor_events_at ON floor_events (at);
"""

ENQUEUE = "INSERT INTO floor_jobs (id, payload) VALUES ($1, $2)"
ENQUEUE_WITH_RECORD = """
WITH record AS (INSERT INTO floor_records (id) VALUES ($1))
INSERT INTO floor_jobs (id, payload) VALUES ($1, $2)
"""
LEASED = """
WITH leased AS (
    UPDATE floor_jobs SET state = 'running', lease_owner = $1,
                          lease_expires_at = now() + interval '5 minutes'{claimed}
    WHERE id IN (SELECT id FROM floor_jobs WHERE state = 'queued' AND run_after <= now()
                 ORDER BY run_after, id LIMIT $2 FOR UPDATE SKIP LOCKED)
    RETURNING id, payload),
events AS (INSERT INTO floor_events (job_id, at, kind)
           SELECT id, now(), 'running' FROM leased){record}
SELECT id, payload FROM leased
"""
RECORD_RUNNING = """,
record AS (UPDATE floor_records SET state = 'running', updated_at = now()
           FROM leased WHERE floor_records.id = leased.id)"""
START = """
WITH marked AS (UPDATE floor_jobs SET in_flight_since = now(), attempts = attempts + 1
                WHERE id = ANY($1::text[]) AND lease_owner = $2 AND state = 'running'
                  AND lease_expires_at > now()
                RETURNING id)
INSERT INTO floor_events (job_id, at, kind) SELECT id, now(), 'attempt' FROM marked
"""
FINISHED = """
WITH done AS ({done}),
events AS (INSERT INTO floor_events (job_id, at, kind)
           SELECT id, now(), 'sent' FROM done){record}
INSERT INTO floor_outbox (job_id, kind, created_at) SELECT id, 'job.sent', now() FROM done
"""
DONE_IN_PLACE = """UPDATE floor_jobs SET state = 'sent', finished_at = now(), lease_owner = NULL
              WHERE id = ANY($1::text[]) AND lease_owner = $2 AND state = 'running'
              RETURNING id"""
DONE_DELETED = """DELETE FROM floor_jobs
              WHERE id = ANY($1::text[]) AND lease_owner = $2 AND state = 'running'
              RETURNING id"""
RECORD_SENT = """,
record AS (UPDATE floor_records SET state = 'sent', finished_at = now(), updated_at = now()
           FROM done WHERE floor_records.id = done.id)"""


@dataclass(frozen=True)
class Layout:
    """A table layout and its statements: the schema, the enqueue (``$1`` id, ``$2``
    payload), the lease (``$1`` owner, ``$2`` limit; returns id and payload), the mark and the
    finish (``$1`` the ids, ``$2`` the owner)."""

    name: str
    schema: str
    enqueue: str
    claim: str
    start: str
    finish: str


FLOOR = Layout(
    "floor",
    QUEUE + EVENTS_AND_OUTBOX,
    ENQUEUE,
    LEASED.format(claimed="", record=""),
    START,
    FINISHED.format(done=DONE_IN_PLACE, record=""),
)
LAYOUTS = (
    FLOOR,
    Layout(
        "queue+record@finish",
        QUEUE + RECORDS + EVENTS_AND_OUTBOX,
        ENQUEUE_WITH_RECORD,
        LEASED.format(claimed="", record=""),
        START,
        FINISHED.format(done=DONE_DELETED, record=RECORD_SENT),
    ),
    Layout(
        "queue+record@claim+finish",
        QUEUE + RECORDS + EVENTS_AND_OUTBOX,
        ENQUEUE_WITH_RECORD,
        LEASED.format(claimed="", record=RECORD_RUNNING),
        START,
        FINISHED.format(done=DONE_DELETED, record=RECORD_SENT),
    ),
    Layout(
        "jobs-today",
        EVENTS_AND_OUTBOX + JOBS_TODAY,
        ENQUEUE,
        LEASED.format(claimed=", claimed_at = now()", record=""),
        START,
        FINISHED.format(done=DONE_IN_PLACE, record=""),
    ),
)


async def layout_drain(
    dsn: str, layout: Layout, jobs: int, workers: int, meter: CpuMeter, batch: int = 100
) -> Drained:
    """``jobs`` jobs enqueued in ``layout`` (not measured), then drained by ``workers``
    connections, ``batch`` at a time: lease, mark, finish, each one statement and commit (each
    claim's own lease owner, as the daemon's)."""
    setup = await asyncpg.connect(dsn)
    try:
        await setup.execute(layout.schema)
        await setup.executemany(
            layout.enqueue, [(f"job_{number:032x}", PAYLOAD) for number in range(jobs)]
        )
        await setup.execute("ANALYZE")
    finally:
        await setup.close()
    pool = await asyncpg.create_pool(dsn, min_size=workers, max_size=workers)

    async def work(worker: str) -> int:
        done = 0
        async with pool.acquire() as connection:
            for claim in itertools.count():
                owner = f"{worker}:{claim}"
                ids = [row[0] for row in await connection.fetch(layout.claim, owner, batch)]
                if not ids:
                    break
                await connection.execute(layout.start, ids, owner)
                await connection.execute(layout.finish, ids, owner)
                done += len(ids)
        return done

    try:
        with meter.measuring():
            started = time.perf_counter()
            counts = await asyncio.gather(*(work(f"w{n}") for n in range(workers)))
            seconds = time.perf_counter() - started
    finally:
        await pool.close()
    assert sum(counts) == jobs, counts
    return meter.drained(jobs, seconds)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    base = os.environ.get("MAILBOX_WORKER_TEST_POSTGRES_URL")
    if not base:
        print("set MAILBOX_WORKER_TEST_POSTGRES_URL to measure the layouts")
        return
    admin_dsn = base.replace("+asyncpg", "")
    meter = CpuMeter(await postgres_postmaster(base))
    print(f"jobs={args.jobs} workers={args.workers} batch={args.batch} cpus={os.cpu_count()}")
    admin = await asyncpg.connect(admin_dsn)
    try:
        for _ in range(args.rounds):
            runs: list[tuple[str, Drained]] = []
            for name in ["pgqueuer", *(layout.name for layout in LAYOUTS)]:
                database = f"mw_layouts_{uuid.uuid4().hex[:8]}"
                await admin.execute(f'CREATE DATABASE "{database}"')
                dsn = f"{admin_dsn.rsplit('/', 1)[0]}/{database}"
                try:
                    if name == "pgqueuer":
                        drained = await queue_references.pgqueuer_drain(
                            dsn, args.jobs, args.batch, meter
                        )
                    else:
                        layout = next(each for each in LAYOUTS if each.name == name)
                        drained = await layout_drain(
                            dsn, layout, args.jobs, args.workers, meter, args.batch
                        )
                finally:
                    await admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
                runs.append((name, drained))
            reference = runs[0][1].rate
            for name, drained in runs:
                server = (
                    "n/a" if drained.server_cpu is None else f"{drained.server_cpu * 1e6:4.0f} us"
                )
                print(
                    f"  {name:27} {drained.rate:8.0f} jobs/s  x{drained.rate / reference:5.2f} "
                    f"pgqueuer  CPU per job: client {drained.client_cpu * 1e6:4.0f} us, "
                    f"PostgreSQL {server}"
                )
            print()
    finally:
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
