"""Settling an ``unknown`` job (resolve, retry, cancel) on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from mailbox_worker.db.models import Job
from mailbox_worker.events.outbox import Outbox
from mailbox_worker.jobs.transitions import CANCEL_UNKNOWN, JOB_SETTLED, RESOLVE, RETRY, Settlement
from mailbox_worker.states import JobState

from .conftest import Stores, expire_leases
from .test_queue import new_job, setup


async def unknown_job(stores: Stores, subject: str = "Invoice 1") -> Job:
    """A job whose worker died while its request was in flight."""
    mailbox = await setup(stores)
    job, _ = await stores.jobs.enqueue(new_job(mailbox, subject=subject))
    [claimed] = await stores.queue.claim("dead-worker", 1, dt.timedelta(minutes=1))
    assert await stores.queue.start_attempt(claimed.lease)
    await expire_leases(stores.sessions)
    assert await stores.queue.recover_expired_leases() == (0, 1)
    stored = await stores.jobs.get(job.id)
    assert stored is not None and stored.state == JobState.UNKNOWN
    return stored


@pytest.mark.parametrize(
    ("settlement", "state"),
    [(RESOLVE, JobState.SENT), (RETRY, JobState.QUEUED), (CANCEL_UNKNOWN, JobState.CANCELLED)],
    ids=["resolve", "retry", "cancel"],
)
async def test_an_unknown_job_is_settled_with_event_audit_and_outbox_event(
    stores: Stores, settlement: Settlement, state: JobState
) -> None:
    job = await unknown_job(stores)

    settled = await stores.jobs.settle_unknown(job.id, settlement, "key_1", job.account_id)

    assert settled is not None
    now, moved = settled
    assert moved
    assert (now.state, now.last_error_code) == (state, settlement.code)
    assert now.last_error_message == settlement.message
    assert (now.finished_at is None) == (state == JobState.QUEUED)
    last = (await stores.jobs.events(job.id))[-1]
    assert (last.from_state, last.to_state, last.code, last.detail) == (
        JobState.UNKNOWN,
        state,
        settlement.code,
        "key_1",
    )
    audits = [a for a in await stores.accounts.audit_events(job.account_id) if a.target == job.id]
    assert [(a.actor, a.action, a.detail["settlement"]) for a in audits] == [
        ("key_1", JOB_SETTLED, settlement.name)
    ]
    assert audits[0].detail.get("accept_duplicate_risk") is (True if settlement is RETRY else None)
    events = [e for e in await Outbox(stores.sessions).all() if e.kind == JOB_SETTLED]
    assert [(e.account_id, e.payload) for e in events] == [
        (
            job.account_id,
            {
                "job_id": job.id,
                "mailbox_id": job.mailbox_id,
                "state": state,
                "settlement": settlement.name,
                "code": settlement.code,
            },
        )
    ]


async def test_a_retried_job_is_claimed_again(stores: Stores) -> None:
    job = await unknown_job(stores)
    await stores.jobs.settle_unknown(job.id, RETRY, "cli")

    claimed = await stores.queue.claim("worker-2", 1, dt.timedelta(minutes=1))

    assert [c.job.id for c in claimed] == [job.id]


async def test_only_an_unknown_job_is_settled(stores: Stores) -> None:
    mailbox = await setup(stores)
    queued, _ = await stores.jobs.enqueue(new_job(mailbox))

    settled = await stores.jobs.settle_unknown(queued.id, RESOLVE, "cli")

    assert settled is not None
    assert (settled[0].state, settled[1]) == (JobState.QUEUED, False)
    assert await stores.jobs.settle_unknown("job_missing", RESOLVE, "cli") is None
    assert await stores.jobs.settle_unknown(queued.id, RESOLVE, "k", "acc_other") is None
    assert [e.kind for e in await Outbox(stores.sessions).all() if e.kind == JOB_SETTLED] == []


async def test_of_two_concurrent_settlements_exactly_one_wins(stores: Stores) -> None:
    job = await unknown_job(stores)

    results = await asyncio.gather(
        stores.jobs.settle_unknown(job.id, RESOLVE, "key_a"),
        stores.jobs.settle_unknown(job.id, RETRY, "key_b"),
    )

    outcomes = [result for result in results if result is not None]
    assert sorted(moved for _, moved in outcomes) == [False, True]
    winner = next(job for job, moved in outcomes if moved)
    stored = await stores.jobs.get(job.id)
    assert stored is not None and stored.state == winner.state
    settled_events = [e for e in await stores.jobs.events(job.id) if e.from_state == "unknown"]
    assert len(settled_events) == 1
    assert len([e for e in await Outbox(stores.sessions).all() if e.kind == JOB_SETTLED]) == 1
