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

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from mailbox_worker.db.models import Job, JobEvent, OutboxEvent
from mailbox_worker.jobs.claims import ClaimedJob
from mailbox_worker.jobs.queue import JobQueue, Lease
from mailbox_worker.jobs.transitions import Outcome
from mailbox_worker.states import JobState

from .conftest import Stores
from .test_queue import new_job, setup

LEASE = dt.timedelta(seconds=60)


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
