"""A mailbox's claimed recipients by the hour (``mailbox_claim_hours``, migration 0022), on SQLite
and PostgreSQL: the triggers on ``jobs`` keep them equal to the jobs' own claim times through
claims, claims again, changes and deletions; the claim reads the daily window from them and
from the jobs of the hour it starts in, exactly; retention deletes the old hours."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from sqlalchemy import delete, select, update

from mailbox_worker.clock import utcnow
from mailbox_worker.db.models import Job, MailboxClaimHour
from mailbox_worker.db.retention import Retention, RetentionSettings
from mailbox_worker.jobs.limits import LimitDefaults
from mailbox_worker.jobs.queue import JobQueue
from mailbox_worker.states import JobState

from .conftest import Stores
from .test_mailbox_limits import LEASE, enqueue, new_mailbox, set_limits


def hour_of(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


async def hours(stores: Stores) -> Counter[tuple[str, dt.datetime]]:
    """What ``mailbox_claim_hours`` holds, hours counted down to nothing left out."""
    async with stores.sessions() as session:
        rows = (await session.execute(select(MailboxClaimHour))).scalars().all()
    return Counter({(row.mailbox_id, row.hour): row.recipients for row in rows if row.recipients})


async def hours_of_the_jobs(stores: Stores) -> Counter[tuple[str, dt.datetime]]:
    """The same, computed from the jobs' own claim times and recipient counts."""
    async with stores.sessions() as session:
        rows = (
            await session.execute(
                select(Job.mailbox_id, Job.claimed_at, Job.recipient_count).where(
                    Job.claimed_at.is_not(None)
                )
            )
        ).all()
    counted: Counter[tuple[str, dt.datetime]] = Counter()
    for mailbox_id, claimed_at, recipients in rows:
        assert claimed_at is not None
        counted[mailbox_id, hour_of(claimed_at)] += recipients
    return +counted


async def test_the_hours_follow_the_jobs_claim_times(stores: Stores) -> None:
    """Claims, a claim time moved to another hour (as a claim again after a retry moves it),
    a recipient count changed, a job moved to another mailbox, a job deleted: after each, the
    hours are the jobs' own, summed."""
    queue = JobQueue(stores.sessions, utcnow, LimitDefaults())
    first = await new_mailbox(stores, "acme", "billing@contoso.example")
    second = await new_mailbox(stores, "fabrikam", "billing@fabrikam.example")
    await set_limits(stores, first, max_concurrency=10)
    await enqueue(stores, first, 4, to=2)
    await enqueue(stores, second, 3, to=3)
    assert await hours(stores) == Counter()  # nothing claimed yet
    claimed = await queue.claim("w", 10, LEASE)
    assert len(claimed) == 7
    expected = await hours_of_the_jobs(stores)
    assert sum(expected.values()) == 4 * 2 + 3 * 3
    assert await hours(stores) == expected
    ids = [item.job.id for item in claimed if item.job.mailbox_id == first.id]
    earlier = utcnow() - dt.timedelta(hours=5)
    async with stores.sessions.begin() as session:
        await session.execute(update(Job).where(Job.id == ids[0]).values(claimed_at=earlier))
        await session.execute(update(Job).where(Job.id == ids[1]).values(recipient_count=7))
        await session.execute(update(Job).where(Job.id == ids[2]).values(mailbox_id=second.id))
        await session.execute(delete(Job).where(Job.id == ids[3]))
    assert await hours(stores) == await hours_of_the_jobs(stores)
    assert (first.id, hour_of(earlier)) in await hours(stores)


async def test_the_daily_cap_counts_exactly_the_claims_of_the_last_day(stores: Stores) -> None:
    """A cap of 10 recipients. Sent before: 4 recipients just inside the window (in the hour
    it starts in, read from the jobs), 5 two hours ago (a whole hour, read from
    ``mailbox_claim_hours``), 7 just outside it (not counted). 9 counted: one job of one
    recipient fits, a second would make 11, and the next claim defers the mailbox until the
    oldest claim inside leaves the window. Leaving out either part, or counting the job
    outside, changes how many are claimed."""
    queue = JobQueue(stores.sessions, utcnow, LimitDefaults())
    mailbox = await new_mailbox(stores, "acme", "billing@contoso.example")
    await set_limits(stores, mailbox, daily_recipient_cap=10, max_concurrency=10)
    now = utcnow()
    sent = await enqueue(stores, mailbox, 3, to=1)
    for job, recipients, claimed_at in zip(
        sent,
        (4, 5, 7),
        (
            now - dt.timedelta(days=1) + dt.timedelta(seconds=30),
            now - dt.timedelta(hours=2),
            now - dt.timedelta(days=1) - dt.timedelta(seconds=30),
        ),
        strict=True,
    ):
        async with stores.sessions.begin() as session:
            await session.execute(
                update(Job)
                .where(Job.id == job.id)
                .values(state=JobState.SENT, recipient_count=recipients, claimed_at=claimed_at)
            )
    await enqueue(stores, mailbox, 2, to=1)
    claimed = await queue.claim("w", 10, LEASE)
    assert len(claimed) == 1
    assert await queue.claim("w", 10, LEASE) == []  # 10 of 10: deferred
    paused = await stores.mailboxes.get(mailbox.id)
    assert paused is not None and paused.pause_reason == "daily_cap"
    assert paused.paused_until is not None  # when the oldest claim in the window leaves it
    expected = now + dt.timedelta(seconds=30)
    assert abs((paused.paused_until - expected).total_seconds()) < 1


async def test_retention_deletes_the_hours_older_than_two_days(stores: Stores) -> None:
    mailbox = await new_mailbox(stores, "acme", "billing@contoso.example")
    jobs = await enqueue(stores, mailbox, 2, to=1)
    now = utcnow()
    for job, claimed_at in zip(
        jobs, (now - dt.timedelta(days=2, hours=2), now - dt.timedelta(hours=3)), strict=True
    ):
        async with stores.sessions.begin() as session:
            await session.execute(
                update(Job)
                .where(Job.id == job.id)
                .values(state=JobState.SENT, claimed_at=claimed_at)
            )
    assert len(await hours(stores)) == 2
    purged = await Retention(stores.sessions, RetentionSettings(pause=0)).purge()
    assert purged["claim_hours"] == 1
    assert list(await hours(stores)) == [(mailbox.id, hour_of(now - dt.timedelta(hours=3)))]
