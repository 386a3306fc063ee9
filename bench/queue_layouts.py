"""Queue layouts at the database's speed: what a drained job costs PostgreSQL in each table
layout, with the least client (raw asyncpg, one statement per step for a whole batch), against
pgqueuer in the same run. It measures the data model apart from the engine's code
(docs/performance.md "Twelfth pass"). Never passes or fails on time.

    .venv/bin/python bench/queue_layouts.py [--jobs 10000] [--workers 4] [--batch 100]
        [--rounds 2] [--layouts floor,jobs-today,...]

Every layout drains the same way: ``--workers`` connections each lease ``--batch`` jobs with
their transition's event (one statement, its own commit, as before any provider request),
mark them in flight with the attempt's event (one statement, its own commit), and finish them
with their event and the outbox row of the integrator's callback (one statement). Those are
the writes promise 1 needs per job (docs/architecture.md). A claim that finds nothing while
jobs are left (another claimer holds the mailboxes) waits 1 ms and claims again, as
``queue_throughput.py``'s drain does.

In the first four layouts the claim takes the oldest due jobs whatever their mailbox: promise
5's per-mailbox limits (concurrency, rate, daily cap), which the daemon's claim applies under
the mailboxes' row locks, are not there, and neither is their cost. The last five apply them
with the daemon's two-statement claim function (``LIMITED_CLAIM``: migration 0018's rules) over
twenty mailboxes whose limits are set too high to bind (``MAILBOXES``), with statement 1 as
0018 has it (``all-locked``: up to the claim's limit of mailboxes locked at once) or locking
mailboxes one at a time until they can fill the claim (``in-turn``, ``LOCK_AS_NEEDED``).

Layouts:

* ``floor``: the queue's rows alone (two indexes); the fewest writes promise 1 allows.
* ``queue+record@finish``: a narrow queue table whose row is deleted at the finish, and the
  job's record (five indexes: the key, the idempotency key and three for the API's lists)
  updated once, at the finish.
* ``queue+record@claim+finish``: the same, the record also updated at the claim (so that it
  says ``running`` without looking at the queue).
* ``jobs-today``: one ``jobs`` table holding both, with the engine's nine indexes and
  ``job_events``' four (migrations up to 0019), updated at the lease, the mark and the finish.
* ``all-locked jobs-today``, ``in-turn jobs-today``: ``jobs-today`` with the limits, the
  usage read from the jobs claimed in the windows (as migration 0018 reads it).
* ``all-locked queue@finish``, ``in-turn queue@finish``, ``in-turn queue@claim+finish``: the
  narrow queue with the limits, its rows carrying their mailbox, the windows read from a
  ledger of claims (``floor_claims``, one row per mailbox per claim).

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

LIMITED_QUEUE = f"""
CREATE TABLE IF NOT EXISTS floor_jobs ({QUEUE_COLUMNS},
    mailbox_id text NOT NULL, priority integer NOT NULL DEFAULT 0,
    recipient_count integer NOT NULL DEFAULT 1, created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS floor_jobs_mailbox
    ON floor_jobs (mailbox_id, state, priority DESC, run_after, created_at);
CREATE INDEX IF NOT EXISTS floor_jobs_due ON floor_jobs (state, run_after);
CREATE TABLE IF NOT EXISTS floor_claims (
    mailbox_id text NOT NULL, claimed_at timestamptz NOT NULL, jobs integer NOT NULL,
    recipients integer NOT NULL
);
CREATE INDEX IF NOT EXISTS floor_claims_window
    ON floor_claims (mailbox_id, claimed_at) INCLUDE (jobs, recipients);
"""
"""The narrow queue with promise 5's limits: the queue's rows carry their mailbox and what the
claim orders by; the rate and daily windows are read from a ledger of claims, one row per
mailbox per claim, instead of from every job claimed in the last day."""
LIMITED_JOBS_TODAY = """
ALTER TABLE floor_jobs ADD COLUMN IF NOT EXISTS recipient_count integer NOT NULL DEFAULT 1;
"""
MAILBOXES = """
CREATE TABLE IF NOT EXISTS floor_mailboxes (
    id text PRIMARY KEY, account_id text NOT NULL DEFAULT 'acc_1',
    state text NOT NULL DEFAULT 'connected', max_concurrency integer NOT NULL,
    rate_per_minute integer, daily_recipient_cap integer, paused_until timestamptz,
    pause_reason text
);
INSERT INTO floor_mailboxes (id, max_concurrency, rate_per_minute, daily_recipient_cap)
SELECT 'mbx_' || n, 1000000, 1000000, 1000000000 FROM generate_series(0, 19) AS n
ON CONFLICT DO NOTHING;
"""
"""Twenty mailboxes of one account, as ``queue_throughput.py`` drains, each with a concurrency,
a rate and a daily cap too high to bind: the claim computes them all, as it does with a
provider's defaults, and defers no mailbox."""
LIMITED_ENQUEUE = """
INSERT INTO floor_jobs (id, payload, mailbox_id)
VALUES ($1, $2, 'mbx_' || abs(hashtext($1)) % 20)
"""
LIMITED_ENQUEUE_WITH_RECORD = f"""
WITH record AS (INSERT INTO floor_records (id) VALUES ($1)){LIMITED_ENQUEUE}"""  # noqa: S608
USAGE_FROM_JOBS = """
SELECT count(*) FILTER (WHERE job.state = 'running') AS running,
       count(*) FILTER (WHERE job.claimed_at > v_now - interval '1 minute')
           AS claimed_last_minute,
       coalesce(sum(job.recipient_count) FILTER (WHERE job.claimed_at > v_now - interval '1 day'),
                0) AS recipients_last_day,
       min(job.claimed_at) FILTER (WHERE job.claimed_at > v_now - interval '1 minute')
           AS oldest_minute,
       min(job.claimed_at) FILTER (WHERE job.claimed_at > v_now - interval '1 day') AS oldest_day
FROM floor_jobs AS job
WHERE job.mailbox_id = locked.mailbox_id
  AND (job.state = 'running'
       OR job.claimed_at > CASE WHEN locked.cap IS NOT NULL THEN v_now - interval '1 day'
                                WHEN locked.rate IS NOT NULL THEN v_now - interval '1 minute'
                                ELSE CAST('infinity' AS timestamptz) END)"""
"""Today's usage: the mailbox's running jobs and the jobs it claimed within the windows, read
from ``jobs`` by ``(mailbox_id, claimed_at)`` (migration 0018's second statement)."""
USAGE_FROM_LEDGER = """
SELECT (SELECT count(*) FROM floor_jobs AS job
        WHERE job.mailbox_id = locked.mailbox_id AND job.state = 'running') AS running,
       coalesce(sum(c.jobs) FILTER (WHERE c.claimed_at > v_now - interval '1 minute'), 0)
           AS claimed_last_minute,
       coalesce(sum(c.recipients) FILTER (WHERE c.claimed_at > v_now - interval '1 day'), 0)
           AS recipients_last_day,
       min(c.claimed_at) FILTER (WHERE c.claimed_at > v_now - interval '1 minute')
           AS oldest_minute,
       min(c.claimed_at) FILTER (WHERE c.claimed_at > v_now - interval '1 day') AS oldest_day
FROM floor_claims AS c
WHERE c.mailbox_id = locked.mailbox_id
  AND c.claimed_at > CASE WHEN locked.cap IS NOT NULL THEN v_now - interval '1 day'
                          WHEN locked.rate IS NOT NULL THEN v_now - interval '1 minute'
                          ELSE CAST('infinity' AS timestamptz) END"""
"""The narrow queue's usage: the running jobs from the queue, the windows from the ledger."""
LEDGER = """,
ledger AS (INSERT INTO floor_claims (mailbox_id, claimed_at, jobs, recipients)
           SELECT leased.mailbox_id, v_now, count(*), sum(leased.recipient_count)
           FROM leased GROUP BY leased.mailbox_id)"""
LOCK_ALL = """
    -- 1. Lock the mailboxes with due jobs, below their concurrency, in turns between accounts.
    WITH locked AS (
        SELECT m AS mailbox, turns.turn, turns.oldest_due, m.id
        FROM floor_mailboxes AS m
        JOIN (
            SELECT waiting.id, waiting.oldest_due,
                   row_number() OVER (PARTITION BY waiting.account_id
                                      ORDER BY waiting.oldest_due, waiting.id) AS turn
            FROM (
                SELECT mb.id, mb.account_id,
                       {oldest_due} AS oldest_due
                FROM floor_mailboxes AS mb
                WHERE mb.state = 'connected'
                  AND (mb.paused_until IS NULL OR mb.paused_until <= v_now)
                  AND (SELECT count(*) FROM floor_jobs AS j
                       WHERE j.mailbox_id = mb.id AND j.state = 'running') < mb.max_concurrency
                OFFSET 0
            ) AS waiting
            WHERE waiting.oldest_due <= v_now
        ) AS turns ON turns.id = m.id
        ORDER BY turns.turn, turns.oldest_due, m.id
        LIMIT p_limit
        FOR NO KEY UPDATE OF m SKIP LOCKED
    )
    SELECT (SELECT array_agg(locked.mailbox ORDER BY locked.turn, locked.oldest_due, locked.id)
            FROM locked),
           (SELECT count(*) FROM (SELECT 1 FROM floor_jobs AS j
                                  WHERE j.state = 'queued' AND j.run_after <= v_now
                                  LIMIT p_limit + 1) AS due_jobs),
           (SELECT min(j.run_after) FROM floor_jobs AS j
            WHERE j.state = 'queued' AND j.run_after > v_now)
    INTO v_mailboxes, v_due, v_next_due;
"""
"""Statement 1 as migration 0018 has it: up to the claim's limit of mailboxes locked in one
statement, ``FOR NO KEY UPDATE SKIP LOCKED``."""
LOCK_AS_NEEDED = """
    -- 1. Lock mailboxes with due jobs, in turns between accounts, one at a time (each
    --    SKIP LOCKED), until their room (due jobs up to the limit, below the concurrency)
    --    holds the claim's limit.
    FOR v_candidate IN
        SELECT waiting.id, least(waiting.due, waiting.free) AS room
        FROM (
            SELECT mb.id, mb.account_id, {oldest_due} AS oldest_due,
                   (SELECT count(*) FROM (SELECT 1 FROM floor_jobs AS j
                                          WHERE j.mailbox_id = mb.id AND j.state = 'queued'
                                            AND j.run_after <= v_now
                                          LIMIT p_limit) AS d) AS due,
                   mb.max_concurrency - (SELECT count(*) FROM floor_jobs AS j
                                         WHERE j.mailbox_id = mb.id AND j.state = 'running')
                       AS free
            FROM floor_mailboxes AS mb
            WHERE mb.state = 'connected'
              AND (mb.paused_until IS NULL OR mb.paused_until <= v_now)
            OFFSET 0
        ) AS waiting
        WHERE waiting.oldest_due <= v_now AND waiting.free > 0
        ORDER BY row_number() OVER (PARTITION BY waiting.account_id
                                    ORDER BY waiting.oldest_due, waiting.id),
                 waiting.oldest_due, waiting.id
    LOOP
        SELECT m.* INTO v_mailbox FROM floor_mailboxes AS m WHERE m.id = v_candidate.id
        FOR NO KEY UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        v_mailboxes := array_append(v_mailboxes, v_mailbox);
        v_room := v_room + v_candidate.room;
        EXIT WHEN v_room >= p_limit OR cardinality(v_mailboxes) >= p_limit;
    END LOOP;
    SELECT (SELECT count(*) FROM (SELECT 1 FROM floor_jobs AS j
                                  WHERE j.state = 'queued' AND j.run_after <= v_now
                                  LIMIT p_limit + 1) AS due_jobs),
           (SELECT min(j.run_after) FROM floor_jobs AS j
            WHERE j.state = 'queued' AND j.run_after > v_now)
    INTO v_due, v_next_due;
"""
"""Statement 1 as a loop: it locks only as many mailboxes as the claim can fill, so that
claimers running at once take different mailboxes instead of one taking them all."""
OLDEST_DUE = """(SELECT min(j.run_after) FROM floor_jobs AS j
                        WHERE j.mailbox_id = mb.id AND j.state = 'queued')"""
"""A mailbox's turn as migration 0018 orders it: its oldest queued job (``(mailbox_id, state,
run_after)``)."""
NEXT_DUE = """(SELECT j.run_after FROM floor_jobs AS j
                        WHERE j.mailbox_id = mb.id AND j.state = 'queued'
                          AND j.run_after <= v_now
                        ORDER BY j.priority DESC, j.run_after, j.created_at LIMIT 1)"""
"""A mailbox's turn in the narrow queue, whose one mailbox index is in the lease's order: the
job the lease would take first (one index probe)."""
LIMITED_CLAIM = """
CREATE OR REPLACE FUNCTION floor_claim(p_owner text, p_limit integer)
RETURNS TABLE (claimed_id text, claimed_payload bytea)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET jit = off
AS $function$
#variable_conflict use_column
DECLARE
    v_now timestamptz := clock_timestamp();
    v_mailboxes floor_mailboxes[];
    v_due integer;
    v_next_due timestamptz;
    v_locked integer;
    v_share integer;
    v_room integer := 0;
    v_candidate record;
    v_mailbox floor_mailboxes;
BEGIN
{lock}    v_locked := coalesce(cardinality(v_mailboxes), 0);
    IF v_locked = 0 THEN
        RETURN;
    END IF;
    v_share := (p_limit + v_locked - 1) / v_locked;

    -- 2. A new snapshot: their usage, and the lease.
    RETURN QUERY
    WITH locked AS (
        SELECT (v_mailboxes[i]).id AS mailbox_id, i AS position,
               (v_mailboxes[i]).max_concurrency AS concurrency,
               (v_mailboxes[i]).rate_per_minute AS rate,
               (v_mailboxes[i]).daily_recipient_cap AS cap
        FROM generate_subscripts(v_mailboxes, 1) AS i
    ),
    usage AS (
        SELECT locked.mailbox_id, locked.position, used.oldest_minute, used.oldest_day,
               CASE WHEN locked.cap IS NOT NULL AND used.recipients_last_day >= locked.cap
                        THEN 'daily_cap'
                    WHEN locked.rate IS NOT NULL AND used.claimed_last_minute >= locked.rate
                        THEN 'rate_limit'
               END AS deferred,
               greatest(0, least(locked.concurrency - used.running,
                                 coalesce(locked.rate - used.claimed_last_minute,
                                          locked.concurrency - used.running))) AS allowance,
               locked.cap - used.recipients_last_day AS remaining
        FROM locked CROSS JOIN LATERAL ({usage}) AS used
    ),
    candidates AS (
        SELECT next.id, next.recipients, usage.mailbox_id, usage.position, usage.remaining,
               row_number() OVER mailbox_order AS rank,
               sum(next.recipients) OVER mailbox_order AS cumulative
        FROM usage CROSS JOIN LATERAL (
            SELECT job.id, job.priority, job.run_after, job.created_at,
                   job.recipient_count AS recipients
            FROM floor_jobs AS job
            WHERE job.mailbox_id = usage.mailbox_id AND job.state = 'queued'
              AND job.run_after <= v_now
            ORDER BY job.priority DESC, job.run_after, job.created_at
            LIMIT least(usage.allowance, v_share)
        ) AS next
        WHERE usage.deferred IS NULL
        WINDOW mailbox_order AS (PARTITION BY usage.mailbox_id
                                 ORDER BY next.priority DESC, next.run_after, next.created_at
                                 ROWS UNBOUNDED PRECEDING)
    ),
    deferrals AS (
        SELECT usage.mailbox_id,
               CASE WHEN usage.deferred = 'rate_limit'
                        THEN coalesce(usage.oldest_minute, v_now) + interval '1 minute'
                    ELSE coalesce(usage.oldest_day, v_now) + interval '1 day'
               END AS until,
               coalesce(usage.deferred, 'daily_cap') AS reason
        FROM usage
        WHERE usage.deferred IS NOT NULL
           OR EXISTS (SELECT 1 FROM candidates
                      WHERE candidates.mailbox_id = usage.mailbox_id AND candidates.rank = 1
                        AND candidates.cumulative > candidates.remaining)
    ),
    deferred AS (
        UPDATE floor_mailboxes SET paused_until = deferrals.until, pause_reason = deferrals.reason
        FROM deferrals
        WHERE floor_mailboxes.id = deferrals.mailbox_id
          AND (floor_mailboxes.paused_until IS NULL
               OR floor_mailboxes.paused_until < deferrals.until)
        RETURNING floor_mailboxes.id
    ),
    chosen AS (
        SELECT candidates.id, candidates.rank, candidates.position
        FROM candidates
        WHERE candidates.remaining IS NULL OR candidates.cumulative <= candidates.remaining
        ORDER BY candidates.rank, candidates.position
        LIMIT p_limit
    ),
    leased AS (
        UPDATE floor_jobs SET state = 'running', lease_owner = p_owner,
                              lease_expires_at = v_now + interval '5 minutes'{claimed}
        FROM chosen
        WHERE floor_jobs.id = chosen.id AND floor_jobs.state = 'queued'
        RETURNING floor_jobs.id, floor_jobs.payload, floor_jobs.mailbox_id,
                  floor_jobs.recipient_count
    ),
    events AS (INSERT INTO floor_events (job_id, at, kind)
               SELECT leased.id, v_now, 'running' FROM leased){ledger}{record}
    SELECT leased.id, leased.payload FROM leased;
END
$function$;
"""
"""The daemon's claim (migration 0018's function, without the accounts' pause and the counts'
return; its JIT off, as migration 0020 set it) over a layout: ``lock`` is statement 1,
``usage`` reads the mailbox's usage, ``claimed`` and ``ledger`` record the claim for later
windows, ``record`` updates the job's record."""
LIMITED_CLAIM_CALL = "SELECT claimed_id, claimed_payload FROM floor_claim($1, $2)"


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


def limited(name: str, lock: str, today: bool, record_at_claim: bool) -> Layout:
    """A layout whose claim applies promise 5's limits (``LIMITED_CLAIM``) with statement 1
    ``lock``: today's ``jobs`` table (usage from the jobs claimed in the windows), or the
    narrow queue with a ledger of claims and the record updated at the finish (and at the
    claim with ``record_at_claim``)."""
    if today:
        schema = EVENTS_AND_OUTBOX + JOBS_TODAY + LIMITED_JOBS_TODAY + MAILBOXES
        claim = LIMITED_CLAIM.format(
            lock=lock.format(oldest_due=OLDEST_DUE),
            usage=USAGE_FROM_JOBS,
            claimed=", claimed_at = v_now",
            ledger="",
            record="",
        )
        return Layout(
            name,
            schema + claim,
            LIMITED_ENQUEUE,
            LIMITED_CLAIM_CALL,
            START,
            FINISHED.format(done=DONE_IN_PLACE, record=""),
        )
    claim = LIMITED_CLAIM.format(
        lock=lock.format(oldest_due=NEXT_DUE),
        usage=USAGE_FROM_LEDGER,
        claimed="",
        ledger=LEDGER,
        record=RECORD_RUNNING if record_at_claim else "",
    )
    return Layout(
        name,
        LIMITED_QUEUE + RECORDS + EVENTS_AND_OUTBOX + MAILBOXES + claim,
        LIMITED_ENQUEUE_WITH_RECORD,
        LIMITED_CLAIM_CALL,
        START,
        FINISHED.format(done=DONE_DELETED, record=RECORD_SENT),
    )


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
    *(
        limited(name, lock, today, record_at_claim)
        for name, lock, today, record_at_claim in (
            ("all-locked jobs-today", LOCK_ALL, True, False),
            ("in-turn jobs-today", LOCK_AS_NEEDED, True, False),
            ("all-locked queue@finish", LOCK_ALL, False, False),
            ("in-turn queue@finish", LOCK_AS_NEEDED, False, False),
            ("in-turn queue@claim+finish", LOCK_AS_NEEDED, False, True),
        )
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

    finished = 0

    async def work(worker: str) -> int:
        nonlocal finished
        done = 0
        async with pool.acquire() as connection:
            for claim in itertools.count():
                if finished >= jobs:
                    break
                owner = f"{worker}:{claim}"
                ids = [row[0] for row in await connection.fetch(layout.claim, owner, batch)]
                if not ids:
                    # Another claimer holds the mailboxes' locks, or the last jobs are being
                    # finished: wait as the engine's drain does (queue_throughput.py).
                    await asyncio.sleep(0.001)
                    continue
                await connection.execute(layout.start, ids, owner)
                await connection.execute(layout.finish, ids, owner)
                done += len(ids)
                finished += len(ids)
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
    parser.add_argument(
        "--layouts",
        default=",".join(layout.name for layout in LAYOUTS),
        help="the layouts to drain, by name, separated by commas (pgqueuer always runs)",
    )
    args = parser.parse_args()
    chosen = args.layouts.split(",")
    unknown = set(chosen) - {layout.name for layout in LAYOUTS}
    if unknown:
        parser.error(f"no such layout: {', '.join(sorted(unknown))}")
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
            for name in ["pgqueuer", *chosen]:
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
                    f"  {name:30} {drained.rate:8.0f} jobs/s  x{drained.rate / reference:5.2f} "
                    f"pgqueuer  CPU per job: client {drained.client_cpu * 1e6:4.0f} us, "
                    f"PostgreSQL {server}"
                )
            print()
    finally:
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
