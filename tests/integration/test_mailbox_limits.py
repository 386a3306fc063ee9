"""Per-mailbox limits enforced by the claim, on SQLite and PostgreSQL: concurrency across
claimers, rate, daily cap, pauses, fair share between accounts and priority."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import insert, select, update

from mailbox_worker.clock import new_id, utcnow
from mailbox_worker.db.models import Job, JobContent, Mailbox
from mailbox_worker.jobs.limits import LimitDefaults, ProviderLimits
from mailbox_worker.jobs.queue import JobQueue, Lease
from mailbox_worker.jobs.store import NewJob
from mailbox_worker.jobs.transitions import Outcome
from mailbox_worker.states import JobState, MailboxState

from .conftest import Stores

LEASE = dt.timedelta(seconds=600)


class SteppedClock:
    """Starts just after the real time (so jobs enqueued now are due) and moves on request."""

    def __init__(self) -> None:
        self.now = utcnow() + dt.timedelta(seconds=1)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, by: dt.timedelta) -> None:
        self.now += by


def recipients(count: int) -> list[dict[str, str]]:
    return [{"address": f"ap{number}@fabrikam.example"} for number in range(count)]


async def enqueue(
    stores: Stores,
    mailbox: Mailbox,
    count: int,
    to: int = 1,
    send_at: dt.datetime | None = None,
) -> list[Job]:
    jobs = []
    for number in range(count):
        job, _ = await stores.jobs.enqueue(
            NewJob(
                account_id=mailbox.account_id,
                mailbox_id=mailbox.id,
                mode="send",
                payload={"to": recipients(to), "subject": f"Invoice {number}", "text": "hi"},
                request_sha256=str(number),
                message_id_domain="contoso.example",
                send_at=send_at,
            )
        )
        jobs.append(job)
    return jobs


async def set_limits(stores: Stores, mailbox: Mailbox, **limits: int | None) -> None:
    async with stores.sessions.begin() as session:
        await session.execute(update(Mailbox).where(Mailbox.id == mailbox.id).values(**limits))


async def new_mailbox(stores: Stores, account: str, address: str) -> Mailbox:
    created = await stores.accounts.create_account(account)
    return await stores.connected_mailbox(created.id, address)


async def states(stores: Stores, mailbox: Mailbox) -> dict[str, int]:
    async with stores.sessions() as session:
        rows = (await session.scalars(select(Job.state).where(Job.mailbox_id == mailbox.id))).all()
    return {state: rows.count(state) for state in set(rows)}


async def finish_all(queue: JobQueue, claimed: list[Lease]) -> None:
    for lease in claimed:
        assert await queue.finish(lease, Outcome(JobState.SENT))


async def test_concurrent_claimers_never_exceed_a_mailboxs_concurrency(stores: Stores) -> None:
    clock = SteppedClock()
    queues = [JobQueue(stores.sessions, clock, LimitDefaults()) for _ in range(6)]
    mailbox = await new_mailbox(stores, "acme", "billing@contoso.example")
    await enqueue(stores, mailbox, 40)
    for round_number in range(5):
        batches = await asyncio.gather(
            *(queue.claim(f"w{n}", 8, LEASE) for n, queue in enumerate(queues) for _ in range(2))
        )
        assert (await states(stores, mailbox)).get(JobState.RUNNING, 0) <= 4
        claimed = [item.job for batch in batches for item in batch]
        if round_number == 0:
            assert len(claimed) == 4  # nothing running yet: the mailbox's 4, no more
        # Two of the running jobs end; the next round may start two more, and no more.
        async with stores.sessions() as session:
            running = (
                await session.scalars(
                    select(Job).where(Job.mailbox_id == mailbox.id, Job.state == JobState.RUNNING)
                )
            ).all()
        for job in running[:2]:
            assert job.lease_owner is not None
            lease = Lease(job.id, job.lease_owner.rpartition("/")[0], job.lease_owner)
            assert await queues[0].finish(lease, Outcome(JobState.SENT))
        clock.advance(dt.timedelta(seconds=30))  # stays under the rate of 30 a minute
    assert (await states(stores, mailbox)).get(JobState.SENT) == 10


async def test_rate_limit_defers_then_claims_once_the_window_passes(stores: Stores) -> None:
    clock = SteppedClock()
    queue = JobQueue(stores.sessions, clock, LimitDefaults())
    mailbox = await new_mailbox(stores, "acme", "billing@contoso.example")
    await set_limits(stores, mailbox, rate_per_minute=3, max_concurrency=10)
    await enqueue(stores, mailbox, 10)
    first = await queue.claim("w", 10, LEASE)
    assert len(first) == 3
    await finish_all(queue, [item.lease for item in first])
    clock.advance(dt.timedelta(seconds=30))
    assert await queue.claim("w", 10, LEASE) == []
    paused = await stores.mailboxes.get(mailbox.id)
    assert paused is not None
    assert paused.pause_reason == "rate_limit"
    assert paused.paused_until == clock.now - dt.timedelta(seconds=30) + dt.timedelta(minutes=1)
    assert await states(stores, mailbox) == {JobState.SENT: 3, JobState.QUEUED: 7}
    clock.advance(dt.timedelta(seconds=29))
    assert await queue.claim("w", 10, LEASE) == []  # still within the minute
    clock.advance(dt.timedelta(seconds=2))
    assert len(await queue.claim("w", 10, LEASE)) == 3


async def test_daily_cap_defers_and_never_fails(stores: Stores) -> None:
    clock = SteppedClock()
    queue = JobQueue(stores.sessions, clock, LimitDefaults())
    mailbox = await new_mailbox(stores, "acme", "billing@contoso.example")
    await set_limits(stores, mailbox, daily_recipient_cap=5, max_concurrency=10)
    enqueued = await enqueue(stores, mailbox, 6, to=2)
    assert {job.recipient_count for job in enqueued} == {2}  # counted at enqueue
    first = await queue.claim("w", 10, LEASE)
    assert len(first) == 2  # 4 recipients; a third job would make 6 > 5
    assert {item.job.recipient_count for item in first} == {2}
    await finish_all(queue, [item.lease for item in first])
    clock.advance(dt.timedelta(hours=12))
    assert await queue.claim("w", 10, LEASE) == []
    paused = await stores.mailboxes.get(mailbox.id)
    assert paused is not None
    assert paused.pause_reason == "daily_cap"
    assert await states(stores, mailbox) == {JobState.SENT: 2, JobState.QUEUED: 4}
    clock.advance(dt.timedelta(hours=12, seconds=1))
    assert len(await queue.claim("w", 10, LEASE)) == 2


async def test_a_paused_mailbox_is_skipped_while_others_flow(stores: Stores) -> None:
    clock = SteppedClock()
    queue = JobQueue(stores.sessions, clock, LimitDefaults())
    throttled = await new_mailbox(stores, "acme", "billing@contoso.example")
    other = await new_mailbox(stores, "globex", "billing@globex.example")
    await enqueue(stores, throttled, 3)
    await enqueue(stores, other, 3)
    assert await stores.mailboxes.pause(throttled.id, clock.now + dt.timedelta(seconds=30), "t")
    # A shorter pause does not cut the first one short.
    assert not await stores.mailboxes.pause(throttled.id, clock.now + dt.timedelta(seconds=5), "t")
    claimed = await queue.claim("w", 8, LEASE)
    assert {item.job.mailbox_id for item in claimed} == {other.id}
    assert len(claimed) == 3
    clock.advance(dt.timedelta(seconds=31))
    again = await queue.claim("w", 8, LEASE)
    assert {item.job.mailbox_id for item in again} == {throttled.id}


async def test_one_accounts_backlog_does_not_starve_another_accounts_job(stores: Stores) -> None:
    clock = SteppedClock()
    queue = JobQueue(stores.sessions, clock, LimitDefaults())
    busy = await new_mailbox(stores, "acme", "billing@contoso.example")
    busy_second = await stores.connected_mailbox(busy.account_id, "sales@contoso.example")
    quiet = await new_mailbox(stores, "globex", "billing@globex.example")
    earlier = clock.now - dt.timedelta(hours=1)
    await bulk_enqueue(stores, busy, 10_000, earlier)
    await bulk_enqueue(stores, busy_second, 100, earlier)
    (single,) = await enqueue(stores, quiet, 1)
    clock.now = utcnow() + dt.timedelta(seconds=1)  # the inserts took a while
    claimed = await queue.claim("w", 8, LEASE)
    assert single.id in {item.job.id for item in claimed}
    # Each mailbox's share of 8 between 3 is 3 (limits.claim_share): 3 + 3 of the busy
    # account's mailboxes, 1 of the quiet one; the next claim takes more.
    assert len(claimed) == 7
    assert len(await queue.claim("w", 8, LEASE)) == 2  # each busy mailbox's 4th (concurrency)


async def bulk_enqueue(stores: Stores, mailbox: Mailbox, count: int, at: dt.datetime) -> None:
    ids = [new_id("job") for _ in range(count)]
    jobs = [
        {
            "id": job_id,
            "account_id": mailbox.account_id,
            "mailbox_id": mailbox.id,
            "mode": "send",
            "state": JobState.QUEUED,
            "request_sha256": job_id,
            "message_id": f"<{job_id}@contoso.example>",
            "attempts": 0,
            "transient_failures": 0,
            "run_after": at,
            "created_at": at,
            "updated_at": at,
        }
        for job_id in ids
    ]
    payload = {"to": recipients(1), "subject": "Invoice", "text": "hi"}
    async with stores.sessions.begin() as session:
        await session.execute(insert(Job), jobs)
        await session.execute(
            insert(JobContent), [{"job_id": job_id, "payload": payload} for job_id in ids]
        )


async def test_priority_orders_the_jobs_of_a_mailbox(stores: Stores) -> None:
    clock = SteppedClock()
    queue = JobQueue(stores.sessions, clock, LimitDefaults())
    mailbox = await new_mailbox(stores, "acme", "billing@contoso.example")
    jobs = await enqueue(stores, mailbox, 4)
    async with stores.sessions.begin() as session:
        for job, priority in zip(jobs, (0, 5, -3, 1), strict=True):
            await session.execute(update(Job).where(Job.id == job.id).values(priority=priority))
    order = []
    for _ in jobs:
        (claimed,) = await queue.claim("w", 1, LEASE)
        order.append(claimed.job.id)
        await finish_all(queue, [claimed.lease])
    assert order == [jobs[1].id, jobs[3].id, jobs[0].id, jobs[2].id]


async def test_each_claimed_job_comes_with_its_mailbox_as_read_under_the_lock(
    stores: Stores,
) -> None:
    """The worker sends with the claim's mailbox instead of reading it again per job."""
    clock = SteppedClock()
    queue = JobQueue(stores.sessions, clock, LimitDefaults())
    first = await new_mailbox(stores, "acme", "billing@contoso.example")
    second = await new_mailbox(stores, "acme", "sales@contoso.example")
    await set_limits(stores, second, max_concurrency=7)
    await enqueue(stores, first, 2)
    await enqueue(stores, second, 2)
    claimed = await queue.claim("w", 10, LEASE)
    assert len(claimed) == 4
    for item in claimed:
        stored = await stores.mailboxes.get(item.job.mailbox_id)
        assert stored is not None
        assert item.mailbox.id == stored.id
        assert item.mailbox.address == stored.address
        assert item.mailbox.state == MailboxState.CONNECTED
        assert item.mailbox.provider == stored.provider
        assert item.mailbox.capabilities == stored.capabilities
        assert item.mailbox.max_concurrency == stored.max_concurrency
    assert {item.mailbox.address for item in claimed} == {
        "billing@contoso.example",
        "sales@contoso.example",
    }


async def test_a_claim_says_whether_it_may_have_left_due_jobs(stores: Stores) -> None:
    """``ClaimBatch.more``: False only when every locked mailbox gave what it had due or what
    its limits allow, so that a worker need not claim again at once to learn that."""
    clock = SteppedClock()
    queue = JobQueue(stores.sessions, clock, LimitDefaults())
    few = await new_mailbox(stores, "acme", "billing@contoso.example")
    await enqueue(stores, few, 3)
    batch = await queue.claim_batch("w", 8, LEASE)
    assert (len(batch.jobs), batch.more) == (3, False)  # all it had
    assert (await queue.claim_batch("w", 8, LEASE)).jobs == []

    busy = await new_mailbox(stores, "globex", "billing@globex.example")
    await enqueue(stores, busy, 10)
    batch = await queue.claim_batch("w", 8, LEASE)
    # Its concurrency (4) is all it may have: nothing more until a slot frees.
    assert (len(batch.jobs), batch.more) == (4, False)

    other = await new_mailbox(stores, "initech", "billing@initech.example")
    await enqueue(stores, other, 10)
    await set_limits(stores, other, max_concurrency=20)
    batch = await queue.claim_batch("w", 8, LEASE)
    assert (len(batch.jobs), batch.more) == (8, True)  # the whole claim: there may be more
    batch = await queue.claim_batch("w", 2, LEASE)
    assert (len(batch.jobs), batch.more) == (2, True)


async def test_a_claim_says_whether_due_jobs_are_left_and_when_the_next_is_due(
    stores: Stores,
) -> None:
    """``ClaimBatch.due_left`` and ``next_due``: what the worker waits by after a claim, so
    that it neither claims again when a slot frees with nothing due nor asks the queue again
    when the next job is due. A due job that no claim may take yet (its mailbox at its
    concurrency, or paused) is left; one not due yet is the next due."""
    clock = SteppedClock()
    queue = JobQueue(stores.sessions, clock, LimitDefaults())
    empty = await queue.claim_batch("w", 8, LEASE)
    assert (empty.jobs, empty.due_left, empty.next_due) == ([], False, None)

    few = await new_mailbox(stores, "acme", "billing@contoso.example")
    await enqueue(stores, few, 2)
    later = clock.now + dt.timedelta(minutes=5)
    await enqueue(stores, few, 1, send_at=later + dt.timedelta(minutes=5))
    await enqueue(stores, few, 1, send_at=later)
    batch = await queue.claim_batch("w", 8, LEASE)
    assert (len(batch.jobs), batch.more, batch.due_left) == (2, False, False)  # took all due
    assert batch.next_due == later
    nothing = await queue.claim_batch("w", 8, LEASE)
    assert (nothing.jobs, nothing.due_left, nothing.next_due) == ([], False, later)

    busy = await new_mailbox(stores, "globex", "billing@globex.example")
    await enqueue(stores, busy, 6)
    batch = await queue.claim_batch("w", 8, LEASE)
    assert (len(batch.jobs), batch.more, batch.due_left) == (4, False, True)  # at concurrency
    blocked = await queue.claim_batch("w", 8, LEASE)
    assert (blocked.jobs, blocked.due_left, blocked.next_due) == ([], True, later)

    await finish_all(queue, [item.lease for item in batch.jobs])
    async with stores.sessions.begin() as session:  # the provider asked it to wait
        await session.execute(
            update(Mailbox)
            .where(Mailbox.id == busy.id)
            .values(paused_until=clock.now + dt.timedelta(minutes=1), pause_reason="throttled")
        )
    paused = await queue.claim_batch("w", 8, LEASE)
    assert (paused.jobs, paused.due_left) == ([], True)
    clock.advance(dt.timedelta(minutes=2))
    batch = await queue.claim_batch("w", 8, LEASE)
    assert (len(batch.jobs), batch.due_left, batch.next_due) == (2, False, later)


async def test_a_claim_that_gave_a_mailbox_its_whole_share_may_have_left_jobs(
    stores: Stores,
) -> None:
    clock = SteppedClock()
    queue = JobQueue(stores.sessions, clock, LimitDefaults())
    single = await new_mailbox(stores, "acme", "billing@contoso.example")
    many = await new_mailbox(stores, "globex", "billing@globex.example")
    await set_limits(stores, many, max_concurrency=20)
    await enqueue(stores, single, 1)
    await enqueue(stores, many, 10)
    batch = await queue.claim_batch("w", 8, LEASE)  # a share of 4 each
    assert sorted(item.job.mailbox_id == many.id for item in batch.jobs) == [False] + [True] * 4
    assert batch.more
    again = await queue.claim_batch("w", 8, LEASE)  # now one mailbox: its share is 8
    assert (len(again.jobs), again.more) == (6, False)


async def test_a_claim_takes_the_mailboxes_it_can_fill_and_no_more(stores: Stores) -> None:
    """A claim stops at the mailboxes whose room can fill it (``limits.mailboxes_to_lock``),
    leaving the next to a claim made at the same time, and says it may have left jobs; the
    room of each account's mailbox is at most its account's part of the claim."""
    clock = SteppedClock()
    queue = JobQueue(stores.sessions, clock, LimitDefaults())
    first = await new_mailbox(stores, "acme", "billing@contoso.example")
    second = await stores.connected_mailbox(first.account_id, "sales@contoso.example")
    for mailbox in (first, second):
        await set_limits(stores, mailbox, max_concurrency=20)
        await enqueue(stores, mailbox, 10)
    batch = await queue.claim_batch("w", 8, LEASE)
    assert [item.job.mailbox_id for item in batch.jobs] == [first.id] * 8
    assert batch.more

    other = await new_mailbox(stores, "globex", "billing@globex.example")
    await set_limits(stores, other, max_concurrency=20)
    await enqueue(stores, other, 10)
    # Two accounts: a room of at most 4 each. In turns, the first has 2 left, the other
    # account's mailbox 4, so the second is locked too (without the account's part the other
    # mailbox's 8 would have filled the claim, and it alone would have had a second turn).
    # Three locked: a share of 3 each.
    batch = await queue.claim_batch("w", 8, LEASE)
    taken = [item.job.mailbox_id for item in batch.jobs]
    assert [taken.count(mailbox.id) for mailbox in (first, other, second)] == [2, 3, 3]
    assert batch.more


async def test_a_claim_that_skipped_a_mailbox_another_claimer_held_may_have_left_jobs(
    stores: Stores,
) -> None:
    """PostgreSQL's ``SKIP LOCKED`` passes over a mailbox another claim holds; that claim may
    be over a moment later, so the skipping one says ``more`` and its worker claims again."""
    if stores.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer: no claim skips a locked mailbox")
    clock = SteppedClock()
    queue = JobQueue(stores.sessions, clock, LimitDefaults())
    held = await new_mailbox(stores, "acme", "billing@contoso.example")
    free = await new_mailbox(stores, "globex", "billing@globex.example")
    await enqueue(stores, held, 3)
    await enqueue(stores, free, 1)
    async with stores.sessions.begin() as session:  # another claimer, mid-claim
        await session.execute(
            select(Mailbox.id).where(Mailbox.id == held.id).with_for_update(key_share=True)
        )
        batch = await queue.claim_batch("w", 8, LEASE)
        assert [item.job.mailbox_id for item in batch.jobs] == [free.id]
        assert batch.more
    again = await queue.claim_batch("w", 8, LEASE)
    assert (len(again.jobs), again.more) == (3, False)


# The provider's defaults, for a mailbox without limits of its own (``limits.effective_limits``,
# which PostgreSQL's claim function repeats in SQL): a rate, a daily cap, a mailbox's 0 meaning
# "none of its own", and a provider without defaults.
RATE_TWO = LimitDefaults(max_concurrency=10, providers={"microsoft": ProviderLimits(2, None)})
CAP_THREE = LimitDefaults(max_concurrency=10, providers={"microsoft": ProviderLimits(None, 3)})


async def claimed_then_pause(
    stores: Stores, defaults: LimitDefaults, **limits: int | None
) -> tuple[int, str | None]:
    """How many of 6 due jobs a claim of 10 takes under ``defaults`` (the mailbox's own
    ``limits`` set first), and the mailbox's pause reason after a second claim."""
    clock = SteppedClock()
    queue = JobQueue(stores.sessions, clock, defaults)
    mailbox = await new_mailbox(stores, "acme", "billing@contoso.example")
    if limits:
        await set_limits(stores, mailbox, **limits)
    await enqueue(stores, mailbox, 6)
    first = await queue.claim("w", 10, LEASE)
    await finish_all(queue, [item.lease for item in first])
    clock.advance(dt.timedelta(seconds=1))
    await queue.claim("w", 10, LEASE)
    after = await stores.mailboxes.get(mailbox.id)
    assert after is not None
    return len(first), after.pause_reason


async def test_a_providers_default_rate_applies_to_a_mailbox_without_its_own(
    stores: Stores,
) -> None:
    assert await claimed_then_pause(stores, RATE_TWO) == (2, "rate_limit")


async def test_a_providers_default_daily_cap_applies_to_a_mailbox_without_its_own(
    stores: Stores,
) -> None:
    assert await claimed_then_pause(stores, CAP_THREE) == (3, "daily_cap")


async def test_a_mailboxs_own_zero_means_its_providers_default(stores: Stores) -> None:
    assert await claimed_then_pause(stores, RATE_TWO, rate_per_minute=0) == (2, "rate_limit")


async def test_a_mailboxs_own_limit_wins_over_its_providers_default(stores: Stores) -> None:
    assert await claimed_then_pause(stores, RATE_TWO, rate_per_minute=4) == (4, "rate_limit")


async def test_a_provider_without_defaults_has_no_rate_nor_cap(stores: Stores) -> None:
    defaults = LimitDefaults(max_concurrency=10, providers={"google": ProviderLimits(1, 1)})
    assert await claimed_then_pause(stores, defaults) == (6, None)
