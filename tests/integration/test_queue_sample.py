"""What the worker's housekeeping reads for its gauges (``JobQueue.sample``,
``MailboxStore.count_by_state``), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update

from mailbox_worker.clock import utcnow
from mailbox_worker.db.models import Job
from mailbox_worker.states import JobState

from .conftest import Stores
from .test_queue import LEASE, new_job, setup


async def test_the_sample_ages_the_oldest_due_queued_and_running_jobs(stores: Stores) -> None:
    mailbox = await setup(stores)
    empty = await stores.queue.sample()
    assert (empty.oldest_due_queued, empty.oldest_running) == (0, 0)
    assert set(empty.counts) == set(JobState) and not any(empty.counts.values())

    running, _ = await stores.jobs.enqueue(new_job(mailbox, subject="running"))
    [claimed] = await stores.queue.claim("w", 1, LEASE)
    assert claimed.job.id == running.id
    due, _ = await stores.jobs.enqueue(new_job(mailbox, subject="due"))
    future, _ = await stores.jobs.enqueue(new_job(mailbox, subject="future"))
    now = utcnow()
    async with stores.sessions.begin() as session:
        await session.execute(
            update(Job).where(Job.id == running.id).values(claimed_at=now - dt.timedelta(hours=1))
        )
        await session.execute(
            update(Job).where(Job.id == due.id).values(run_after=now - dt.timedelta(minutes=20))
        )
        # Not due yet, however long ago it was enqueued: not waiting.
        await session.execute(
            update(Job)
            .where(Job.id == future.id)
            .values(run_after=now + dt.timedelta(hours=1), created_at=now - dt.timedelta(days=1))
        )

    sample = await stores.queue.sample()
    assert sample.counts[JobState.QUEUED] == 2 and sample.counts[JobState.RUNNING] == 1
    # Minutes apart from anything the test's own run time could add.
    assert 20 * 60 <= sample.oldest_due_queued < 50 * 60
    assert 60 * 60 <= sample.oldest_running < 90 * 60


async def test_mailboxes_are_counted_by_provider_and_state_with_zeros(stores: Stores) -> None:
    await setup(stores)
    counts = await stores.mailboxes.count_by_state(["google", "microsoft"])
    assert counts[("microsoft", "connected")] == 1
    assert counts[("google", "connected")] == 0
    assert len(counts) == 8  # every provider and state, so a gauge falls back to 0
