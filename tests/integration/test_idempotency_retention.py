"""An ``Idempotency-Key`` answers its first job for ``retention.idempotency_hours`` (24 h by
default), then is forgotten: by the job store at once, and by the retention pass on the row.
On both backends, with a test clock."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import select

from mailbox_worker.clock import utcnow
from mailbox_worker.db.models import Job
from mailbox_worker.db.retention import Retention, RetentionSettings
from mailbox_worker.errors import Conflict
from mailbox_worker.jobs.store import JobStore

from .conftest import Stores
from .test_queue import new_job, setup

HOUR = dt.timedelta(hours=1)


class SetClock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> dt.datetime:
        return self.now


def store(stores: Stores, clock: SetClock, hours: int = 24) -> JobStore:
    return JobStore(stores.sessions, clock, idempotency_window=dt.timedelta(hours=hours))


async def key_of(stores: Stores, job_id: str) -> str | None:
    async with stores.sessions() as session:
        return await session.scalar(select(Job.idempotency_key).where(Job.id == job_id))


async def test_within_the_window_a_key_answers_its_first_job(stores: Stores) -> None:
    mailbox, clock = await setup(stores), SetClock()
    jobs = store(stores, clock)
    first, _ = await jobs.enqueue(new_job(mailbox, key="invoice-42"))
    clock.now += 24 * HOUR - dt.timedelta(seconds=1)
    again, created = await jobs.enqueue(new_job(mailbox, key="invoice-42"))
    assert (again.id, created) == (first.id, False)
    assert await jobs.replay(mailbox.account_id, "invoice-42", "Invoice 1") is not None


async def test_after_the_window_the_same_key_enqueues_a_new_job(stores: Stores) -> None:
    mailbox, clock = await setup(stores), SetClock()
    jobs = store(stores, clock)
    first, _ = await jobs.enqueue(new_job(mailbox, key="invoice-42"))
    clock.now += 24 * HOUR
    assert await jobs.replay(mailbox.account_id, "invoice-42", "Invoice 1") is None
    # even with another body: the old request is no longer a reason to refuse
    fresh, created = await jobs.enqueue(new_job(mailbox, key="invoice-42", subject="Invoice 2"))
    assert created and fresh.id != first.id
    assert await key_of(stores, first.id) is None  # forgotten in the same transaction
    assert await key_of(stores, fresh.id) == "invoice-42"
    again, created = await jobs.enqueue(new_job(mailbox, key="invoice-42", subject="Invoice 2"))
    assert (again.id, created) == (fresh.id, False)


async def test_expired_fresh_and_live_keys_in_one_call_each_get_their_answer(
    stores: Stores,
) -> None:
    """The expired key is forgotten only once it conflicts: its job is inserted again in the
    same transaction, beside a fresh key's and a live key's replay."""
    mailbox, clock = await setup(stores), SetClock()
    jobs = store(stores, clock)
    old, _ = await jobs.enqueue(new_job(mailbox, key="old"))
    clock.now += 23 * HOUR
    live, _ = await jobs.enqueue(new_job(mailbox, key="live"))
    clock.now += HOUR
    results = await jobs.enqueue_many(
        [
            new_job(mailbox, key="old", subject="Invoice 2"),
            new_job(mailbox, key="fresh"),
            new_job(mailbox, key="live"),
            new_job(mailbox, key="old", subject="Invoice 2"),
        ]
    )
    assert not any(isinstance(result, Conflict) for result in results)
    (renewed, a), (fresh, b), (replayed, c), (same, d) = results  # type: ignore[misc]
    assert (a, b, c, d) == (True, True, False, False)
    assert renewed.id not in {old.id, fresh.id} and same.id == renewed.id
    assert replayed.id == live.id
    assert await key_of(stores, old.id) is None
    assert await key_of(stores, renewed.id) == "old"


async def test_concurrent_requests_with_one_expired_key_make_one_job(stores: Stores) -> None:
    mailbox, clock = await setup(stores), SetClock()
    jobs = store(stores, clock)
    old, _ = await jobs.enqueue(new_job(mailbox, key="invoice-42"))
    clock.now += 25 * HOUR
    results = await asyncio.gather(
        *(jobs.enqueue(new_job(mailbox, key="invoice-42")) for _ in range(5))
    )
    assert sorted(created for _, created in results) == [False, False, False, False, True]
    assert len({job.id for job, _ in results}) == 1
    assert old.id not in {job.id for job, _ in results}


async def test_the_window_is_configurable(stores: Stores) -> None:
    mailbox, clock = await setup(stores), SetClock()
    jobs = store(stores, clock, hours=2)
    first, _ = await jobs.enqueue(new_job(mailbox, key="invoice-42"))
    clock.now += HOUR
    with pytest.raises(Conflict, match="idempotency_key_reused"):
        await jobs.enqueue(new_job(mailbox, key="invoice-42", subject="Invoice 2"))
    clock.now += HOUR
    fresh, created = await jobs.enqueue(new_job(mailbox, key="invoice-42", subject="Invoice 2"))
    assert created and fresh.id != first.id


async def test_the_retention_pass_forgets_keys_past_the_window(stores: Stores) -> None:
    mailbox, clock = await setup(stores), SetClock()
    jobs = store(stores, clock)
    old, _ = await jobs.enqueue(new_job(mailbox, key="old"))
    clock.now += 20 * HOUR
    recent, _ = await jobs.enqueue(new_job(mailbox, key="recent"))
    clock.now += 5 * HOUR  # old: 25 h, recent: 5 h
    retention = Retention(
        stores.sessions, RetentionSettings(batch_size=1, pause=0, idempotency_hours=24), clock=clock
    )
    purged = await retention.purge()
    assert purged["idempotency_keys"] == 1
    assert await key_of(stores, old.id) is None
    assert await key_of(stores, recent.id) == "recent"
