"""Every claim fences its own updates (issue 8): a lease is unique to one claim, so a task
whose lease was lost can neither start a request nor record anything, even when the same
worker claimed the job again; and a lease past its expiry cannot start a request. The same
tests on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from mailbox_worker.jobs.queue import Lease
from mailbox_worker.jobs.transitions import Outcome
from mailbox_worker.states import JobState

from .conftest import Stores, expire_leases
from .test_queue import LEASE, new_job, setup


async def test_a_stale_lease_of_the_same_worker_can_neither_start_nor_record(
    stores: Stores,
) -> None:
    mailbox = await setup(stores)
    job, _ = await stores.jobs.enqueue(new_job(mailbox))
    # w1 claimed the job, then its lease expired and was recovered while its task lived on.
    [first] = await stores.queue.claim("w1", 1, LEASE)
    await expire_leases(stores.sessions)
    assert await stores.queue.recover_expired_leases() == (1, 0)
    [second] = await stores.queue.claim("w1", 1, LEASE)
    stale, fresh = first.lease, second.lease
    assert (stale.job_id, stale.worker) == (fresh.job_id, fresh.worker) == (job.id, "w1")
    assert stale.owner != fresh.owner

    queued = Outcome(JobState.QUEUED, "network", "reset")
    assert not await stores.queue.start_attempt(stale)
    assert not await stores.queue.record_provider_ids(
        stale, Outcome(JobState.SENT, provider_message_id="m")
    )
    assert not await stores.queue.finish(stale, Outcome(JobState.SENT))
    assert not await stores.queue.retry_later(stale, dt.datetime.now(dt.UTC), queued, failure=True)
    assert not await stores.queue.hold(stale, "invalid_grant", "consent revoked")
    assert await stores.queue.renew_leases([stale], LEASE) == 0
    assert await stores.queue.hand_back([stale]) == 0

    assert await stores.queue.start_attempt(fresh)
    assert await stores.queue.finish(fresh, Outcome(JobState.SENT))
    stored = await stores.jobs.get(job.id)
    assert stored is not None
    assert (stored.state, stored.attempts) == ("sent", 1)
    events = await stores.jobs.events(job.id)
    assert [e.code for e in events if e.kind == "attempt"] == ["started"]
    assert {e.worker for e in events if e.worker is not None} == {"w1"}  # the name, not the lease


async def test_an_expired_lease_cannot_start_an_attempt(stores: Stores) -> None:
    mailbox = await setup(stores)
    job, _ = await stores.jobs.enqueue(new_job(mailbox))
    # Claimed, then not renewed in time (a slow database): no recovery has run yet.
    [claimed] = await stores.queue.claim("w1", 1, LEASE)
    await expire_leases(stores.sessions)
    assert not await stores.queue.start_attempt(claimed.lease)
    stored = await stores.jobs.get(job.id)
    assert stored is not None
    assert (stored.state, stored.attempts, stored.in_flight_since) == ("running", 0, None)
    assert [e.kind for e in await stores.jobs.events(job.id)] == ["state", "state"]
    # Renewed before any recovery took it, the lease is good again.
    assert await stores.queue.renew_leases([claimed.lease], LEASE) == 1
    assert await stores.queue.start_attempt(claimed.lease)


async def test_an_outcome_is_recorded_under_an_expired_lease_no_recovery_took(
    stores: Stores,
) -> None:
    mailbox = await setup(stores)
    job, _ = await stores.jobs.enqueue(new_job(mailbox))
    [claimed] = await stores.queue.claim("w1", 1, LEASE)
    assert await stores.queue.start_attempt(claimed.lease)
    await expire_leases(stores.sessions)
    # The outcome could only be written after the lease expired (the database was away).
    assert await stores.queue.finish(claimed.lease, Outcome(JobState.SENT))
    assert await stores.queue.recover_expired_leases() == (0, 0)
    stored = await stores.jobs.get(job.id)
    assert stored is not None and stored.state == "sent"


async def test_renewal_and_hand_back_touch_only_the_leases_still_held(stores: Stores) -> None:
    mailbox = await setup(stores)
    for number in range(3):
        await stores.jobs.enqueue(new_job(mailbox, subject=f"n{number}"))
    first = await stores.queue.claim("w1", 2, LEASE)
    [other] = await stores.queue.claim("w1", 1, LEASE)
    lost = Lease(other.job.id, "w1", first[0].lease.owner)  # a job under another claim's owner
    leases = [claimed.lease for claimed in first]
    assert await stores.queue.renew_leases([*leases, lost], LEASE) == 2
    assert await stores.queue.renew_leases([*leases, other.lease], LEASE) == 3
    assert await stores.queue.hand_back([leases[0], lost]) == 1
    assert (await stores.queue.count_by_state())["running"] == 2


async def test_a_long_worker_name_still_fits_the_lease_column(stores: Stores) -> None:
    mailbox = await setup(stores)
    job, _ = await stores.jobs.enqueue(new_job(mailbox))
    name = "a-very-long-host-name-of-a-container.example" + ":4242:abcdef" * 3  # 80 wide
    [claimed] = await stores.queue.claim(name, 1, LEASE)
    assert claimed.lease.worker == name
    assert await stores.queue.start_attempt(claimed.lease)
    stored = await stores.jobs.get(job.id)
    assert stored is not None and stored.lease_owner == claimed.lease.owner
