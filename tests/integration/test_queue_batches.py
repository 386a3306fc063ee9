"""The worker's writes of jobs that finish together go to the database together
(``jobs/coalescing.py``, ``jobs/job_writes.py``): one transaction for the batch, and each job
answered for itself. The same tests on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailbox_worker.clock import utcnow
from mailbox_worker.db.models import Job, JobEvent, OutboxEvent
from mailbox_worker.jobs import job_writes
from mailbox_worker.jobs.claims import ClaimedJob
from mailbox_worker.jobs.queue import JobQueue, Lease
from mailbox_worker.jobs.transitions import Outcome
from mailbox_worker.states import JobState

from .conftest import Stores
from .test_queue import new_job, setup

LEASE = dt.timedelta(seconds=60)
ON_POSTGRESQL = [pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextmanager
def transactions(engine: AsyncEngine) -> Iterator[Counter[str]]:
    """What reaches the database while open: ``statements``, and ``transactions`` (on
    PostgreSQL each autocommit statement is one; on SQLite each commit)."""
    counts: Counter[str] = Counter()
    postgresql = engine.dialect.name == "postgresql"

    def on_statement(*_: Any) -> None:
        counts["statements"] += 1
        if postgresql:
            counts["transactions"] += 1

    def on_commit(*_: Any) -> None:
        if not postgresql:
            counts["transactions"] += 1

    event.listen(engine.sync_engine, "before_cursor_execute", on_statement)
    event.listen(engine.sync_engine, "commit", on_commit)
    try:
        yield counts
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", on_statement)
        event.remove(engine.sync_engine, "commit", on_commit)


async def claimed_jobs(stores: Stores, count: int) -> list[ClaimedJob]:
    mailbox = await setup(stores)
    for number in range(count):
        await stores.jobs.enqueue(new_job(mailbox, key=f"k{number}", subject=f"Invoice {number}"))
    claimed = await stores.queue.claim("w1", count, LEASE)
    assert len(claimed) == count
    return claimed


async def test_jobs_finishing_together_are_written_in_one_transaction(stores: Stores) -> None:
    claimed = await claimed_jobs(stores, 6)
    with transactions(stores.engine) as counts:
        started = await asyncio.gather(*(stores.queue.start_attempt(c.lease) for c in claimed))
    assert started == [True] * 6
    assert counts["transactions"] == 1
    # PostgreSQL: one statement. SQLite: the update of the six, their six events (its
    # BEGIN IMMEDIATE goes with the first: db/sqlite_driver.py).
    postgresql = stores.engine.dialect.name == "postgresql"
    assert counts["statements"] == (1 if postgresql else 2)
    with transactions(stores.engine) as counts:
        finished = await asyncio.gather(
            *(stores.queue.finish(c.lease, Outcome(JobState.SENT)) for c in claimed)
        )
    assert finished == [True] * 6
    assert counts["transactions"] == 1
    assert counts["statements"] == (1 if postgresql else 3)  # SQLite: and their outbox events
    for item in claimed:
        job = await stores.jobs.get(item.job.id)
        assert job is not None
        assert (job.state, job.attempts, job.lease_owner) == ("sent", 1, None)
        history = [(e.kind, e.to_state, e.code) for e in await stores.jobs.events(item.job.id)]
        assert history[-2:] == [("attempt", None, "started"), ("state", "sent", None)]
    async with stores.sessions() as session:
        keys = (await session.scalars(select(OutboxEvent.ordering_key))).all()
    assert sorted(str(key) for key in keys) == sorted(item.job.id for item in claimed)


async def test_each_job_of_a_batch_is_answered_for_itself(stores: Stores) -> None:
    """A lost lease in the batch is refused and left alone; the others are written."""
    claimed = await claimed_jobs(stores, 3)
    lost = Lease(claimed[1].job.id, "w1", "w1/not-the-owner")
    leases = [claimed[0].lease, lost, claimed[2].lease]
    outcomes = [
        Outcome(JobState.FAILED, "rejected", "the provider refused it", provider_status=400),
        Outcome(JobState.SENT),
        Outcome(JobState.SENT, provider_message_id="m-3"),
    ]
    answers = await asyncio.gather(
        *(
            stores.queue.finish(lease, outcome)
            for lease, outcome in zip(leases, outcomes, strict=True)
        )
    )
    assert answers == [True, False, True]
    failed, untouched, sent = [await stores.jobs.get(item.job.id) for item in claimed]
    assert failed is not None and (failed.state, failed.last_error_code) == ("failed", "rejected")
    assert failed.finished_at is not None
    assert untouched is not None and untouched.state == "running"
    assert untouched.lease_owner == claimed[1].lease.owner
    assert sent is not None and (sent.state, sent.provider_message_id) == ("sent", "m-3")
    retried = await stores.queue.retry_later(
        claimed[1].lease,
        dt.datetime.now(dt.UTC),
        Outcome(JobState.QUEUED, "busy", "later"),
        failure=True,
    )
    assert retried
    queued = await stores.jobs.get(claimed[1].job.id)
    assert queued is not None
    assert (queued.state, queued.transient_failures, queued.finished_at) == ("queued", 1, None)


async def test_the_batch_writes_keep_each_time_to_the_microsecond(stores: Stores) -> None:
    """The batches' times (arrays on PostgreSQL, JSON on SQLite) are the clock's, to the
    microsecond, on both databases."""
    # A minute after the enqueue (the job is due then), with microseconds of its own.
    now = dt.datetime.now(dt.UTC).replace(microsecond=123457) + dt.timedelta(minutes=1)
    mailbox = await setup(stores)
    await stores.jobs.enqueue(new_job(mailbox, key="k1"))
    queue = JobQueue(stores.sessions, clock=lambda: now)
    (claimed,) = await queue.claim("w1", 1, LEASE)
    assert await queue.start_attempt(claimed.lease)
    async with stores.sessions() as session:
        assert await session.scalar(select(Job.in_flight_since)) == now
    assert await queue.finish(claimed.lease, Outcome(JobState.SENT))
    async with stores.sessions() as session:
        job = (await session.scalars(select(Job))).one()
        events = (await session.scalars(select(JobEvent.at))).all()
    assert (job.state, job.finished_at, job.updated_at) == (JobState.SENT, now, now)
    assert events.count(now) >= 3  # claimed, attempt started, sent


INDEX_SCANS = text(
    "SELECT indexrelid::regclass::text, pg_stat_get_xact_numscans(indexrelid) FROM pg_index "
    "WHERE indrelid = CAST('jobs' AS regclass)"
)
"""This transaction's scans of each index of ``jobs``, by name."""
HISTORY = text(
    "INSERT INTO jobs (id, account_id, mailbox_id, mode, state, request_sha256, message_id,"
    " attempts, transient_failures, run_after, created_at, updated_at, priority,"
    " recipient_count, claimed_at, finished_at)"
    " SELECT 'old' || n, account_id, mailbox_id, mode, 'sent', request_sha256, message_id,"
    " 1, 0, run_after, created_at, updated_at, 0, 1, now() - interval '3 days',"
    " now() - interval '3 days'"
    " FROM (SELECT * FROM jobs LIMIT 1) AS job, generate_series(1, 3000) AS n"
)


async def _index_scans(connection: AsyncConnection) -> dict[str, int]:
    return {str(name): int(count) for name, count in (await connection.execute(INDEX_SCANS))}


@pytest.mark.parametrize("migrated_database_url", ON_POSTGRESQL, indirect=True)
@pytest.mark.parametrize("plans", ["force_generic_plan", "force_custom_plan"])
async def test_a_batch_reads_its_jobs_by_their_keys_whatever_the_statistics(
    stores: Stores, plans: str
) -> None:
    """The statistics of a database in use: many jobs sent long ago, gathered at a moment when
    no job ran. They put one running job where there are dozens, and the batch writes then
    read every running job through ``jobs (state, run_after)``, once for each job of the
    input in the generic plan. They read each job by its key instead, in either plan, counted
    as this transaction's scans of each index of ``jobs``."""
    claimed = await claimed_jobs(stores, 1)
    for number in range(40):
        await stores.jobs.enqueue(new_job(claimed[0].mailbox, key=f"more{number}"))
    async with stores.engine.begin() as connection:
        await connection.execute(HISTORY)
    (only,) = claimed
    assert await stores.queue.finish(only.lease, Outcome(JobState.SENT))  # none running now
    async with stores.engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("VACUUM ANALYZE jobs"))
    leases = [item.lease for item in await stores.queue.claim("w1", 40, LEASE)]
    assert len(leases) >= 4

    async with stores.engine.connect() as connection, connection.begin() as transaction:
        await connection.execute(text(f"SET LOCAL plan_cache_mode = {plans}"))
        before = await _index_scans(connection)
        now = utcnow()
        started = await job_writes.start(
            connection, [job_writes.Start(x.job_id, x.owner, x.worker, now, now) for x in leases]
        )
        values = job_writes.leave_values(state=JobState.SENT, now=now, code=None, message=None)
        left = await job_writes.leave_running(
            connection,
            [job_writes.Leave(x.job_id, x.owner, values, x.worker, None, now) for x in leases],
        )
        scans = {
            name: count - before[name]
            for name, count in (await _index_scans(connection)).items()
            if count > before[name]
        }
        await transaction.rollback()

    assert started == left == [True] * len(leases)
    assert set(scans) == {"pk_jobs"}, scans
