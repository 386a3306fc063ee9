"""The job queue on real databases: the same tests on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import text, update

from mailbox_worker.clock import utcnow
from mailbox_worker.db.models import Account, Job, Mailbox
from mailbox_worker.errors import Conflict
from mailbox_worker.jobs.queue import Lease, lease_owner
from mailbox_worker.jobs.store import NewJob
from mailbox_worker.jobs.transitions import Outcome
from mailbox_worker.states import JobState, MailboxState

from .conftest import Stores, expire_leases

LEASE = dt.timedelta(seconds=60)


def new_job(mailbox: Mailbox, key: str | None = None, subject: str = "Invoice 1") -> NewJob:
    payload = {"to": [{"address": "ap@fabrikam.example"}], "subject": subject, "text": "hi"}
    return NewJob(
        account_id=mailbox.account_id,
        mailbox_id=mailbox.id,
        mode="send",
        payload=payload,
        request_sha256=subject,
        message_id_domain="contoso.example",
        idempotency_key=key,
    )


async def setup(stores: Stores) -> Mailbox:
    account = await stores.accounts.create_account("acme")
    return await stores.connected_mailbox(account.id)


async def test_enqueue_commits_job_content_and_event(stores: Stores) -> None:
    mailbox = await setup(stores)
    job, created = await stores.jobs.enqueue(new_job(mailbox))
    assert created
    assert job.state == "queued"
    assert job.message_id == f"<{job.id}@contoso.example>"
    assert (await stores.jobs.payload(job.id)) == new_job(mailbox).payload
    events = await stores.jobs.events(job.id)
    assert [(e.from_state, e.to_state) for e in events] == [(None, "queued")]


async def test_idempotency_key_returns_the_first_job(stores: Stores) -> None:
    mailbox = await setup(stores)
    first, created = await stores.jobs.enqueue(new_job(mailbox, key="k1"))
    again, created_again = await stores.jobs.enqueue(new_job(mailbox, key="k1"))
    assert created and not created_again
    assert again.id == first.id
    with pytest.raises(Conflict) as caught:
        await stores.jobs.enqueue(new_job(mailbox, key="k1", subject="other"))
    assert caught.value.code == "idempotency_key_reused"


async def test_concurrent_enqueues_with_one_key_make_one_job(stores: Stores) -> None:
    mailbox = await setup(stores)
    results = await asyncio.gather(
        *(stores.jobs.enqueue(new_job(mailbox, key="race")) for _ in range(8))
    )
    assert len({job.id for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_two_workers_never_claim_the_same_job(stores: Stores) -> None:
    mailbox = await setup(stores)
    for number in range(30):
        await stores.jobs.enqueue(new_job(mailbox, subject=f"n{number}"))
    # Claimers racing for one mailbox: on PostgreSQL one locks it and the others skip it
    # this round (mailbox limits are counted under that lock), so claim in rounds.
    ids: list[str] = []
    for _ in range(30):
        claims = await asyncio.gather(
            *(stores.queue.claim(f"worker-{n}", 7, LEASE) for n in range(6))
        )
        ids += [claimed.job.id for batch in claims for claimed in batch]
        assert all(claimed.payload["to"] for batch in claims for claimed in batch)
        if len(ids) >= 30:
            break
    assert len(ids) == len(set(ids)) == 30


async def test_claim_leases_at_most_limit_jobs_on_a_never_analysed_table(
    stores: Stores,
) -> None:
    # Issue 8: on a table PostgreSQL has no statistics for, `id IN (LIMIT … SKIP LOCKED)` was
    # planned as a semi-join that re-ran the subquery per row, and one claim took all 300.
    postgres = stores.engine.dialect.name == "postgresql"
    if postgres:
        async with stores.engine.begin() as connection:
            await connection.execute(text("ALTER TABLE jobs SET (autovacuum_enabled = false)"))
    mailbox = await setup(stores)
    for number in range(300):
        await stores.jobs.enqueue(new_job(mailbox, subject=f"n{number}"))
    if postgres:
        async with stores.engine.connect() as connection:
            reltuples = await connection.scalar(
                text("SELECT reltuples FROM pg_class WHERE relname = 'jobs'")
            )
        assert reltuples == -1  # never analysed (PostgreSQL 14+)
    sizes: list[int] = []
    ids: set[str] = set()
    for _ in range(4):
        batch = await stores.queue.claim("w", 16, LEASE)
        sizes.append(len(batch))
        ids.update(claimed.job.id for claimed in batch)
    assert sizes == [16, 16, 16, 16]
    assert len(ids) == 64
    counts = await stores.queue.count_by_state()
    assert (counts["running"], counts["queued"]) == (64, 236)


async def test_claim_skips_future_jobs_and_mailboxes_without_consent(stores: Stores) -> None:
    mailbox = await setup(stores)
    due, _ = await stores.jobs.enqueue(new_job(mailbox, subject="due"))
    later, _ = await stores.jobs.enqueue(new_job(mailbox, subject="later"))
    async with stores.sessions.begin() as session:
        await session.execute(
            update(Job).where(Job.id == later.id).values(run_after=utcnow() + dt.timedelta(hours=1))
        )
    other = await stores.mailboxes.create(mailbox.account_id, "microsoft", ["send"], actor="t")
    await stores.jobs.enqueue(new_job(other, subject="pending consent"))
    claimed = await stores.queue.claim("w", 10, LEASE)
    assert [c.job.id for c in claimed] == [due.id]


async def test_claim_passes_over_every_mailbox_with_queued_jobs_that_may_not_send(
    stores: Stores,
) -> None:
    """The claim finds its candidates from the queued jobs (migration 0021): a mailbox with
    queued jobs that may not send now (disconnected, paused, of a paused account, at its
    concurrency, its jobs not due yet) is passed over wherever it falls in the order of the
    mailboxes' ids, and the rest are claimed. Three of each, so that every kind falls
    between claimable ones whatever the random ids."""
    account = await stores.accounts.create_account("acme")
    paused_account = await stores.accounts.create_account("paused")
    later = utcnow() + dt.timedelta(hours=1)
    claimable: set[str] = set()
    for number in range(3):
        name = f"{number}@contoso.example"
        sendable = await stores.connected_mailbox(account.id, f"send{name}")
        due, _ = await stores.jobs.enqueue(new_job(sendable, subject=f"due {number}"))
        claimable.add(due.id)
        disconnected = await stores.connected_mailbox(account.id, f"gone{name}")
        paused = await stores.connected_mailbox(account.id, f"paused{name}")
        elsewhere = await stores.connected_mailbox(paused_account.id, f"other{name}")
        busy = await stores.connected_mailbox(account.id, f"busy{name}")
        waiting = await stores.connected_mailbox(account.id, f"later{name}")
        for mailbox in (disconnected, paused, elsewhere, busy, waiting):
            await stores.jobs.enqueue(new_job(mailbox, subject=f"held {number}"))
        await stores.jobs.enqueue(new_job(busy, subject=f"running {number}"))
        async with stores.sessions.begin() as session:
            await session.execute(
                update(Mailbox)
                .where(Mailbox.id == disconnected.id)
                .values(state=MailboxState.DISCONNECTED)
            )
            await session.execute(
                update(Mailbox)
                .where(Mailbox.id == paused.id)
                .values(paused_until=later, pause_reason="rate_limit")
            )
            await session.execute(
                update(Mailbox).where(Mailbox.id == busy.id).values(max_concurrency=1)
            )
            await session.execute(
                update(Job)
                .where(Job.mailbox_id == busy.id, Job.request_sha256 == f"running {number}")
                .values(state=JobState.RUNNING)
            )
            await session.execute(
                update(Job).where(Job.mailbox_id == waiting.id).values(run_after=later)
            )
    async with stores.sessions.begin() as session:  # as AccountRights.pause leaves it
        await session.execute(
            update(Account).where(Account.id == paused_account.id).values(paused_at=utcnow())
        )
    claimed = await stores.queue.claim("w", 100, LEASE)
    assert {each.job.id for each in claimed} == claimable
    assert await stores.queue.claim("w", 100, LEASE) == []


async def test_outcome_is_recorded_only_by_the_lease_holder(stores: Stores) -> None:
    mailbox = await setup(stores)
    job, _ = await stores.jobs.enqueue(new_job(mailbox))
    [claimed] = await stores.queue.claim("w1", 1, LEASE)
    lease = claimed.lease
    other = Lease(job.id, "w2", lease_owner("w2"))
    assert not await stores.queue.start_attempt(other)
    assert await stores.queue.start_attempt(lease)
    assert not await stores.queue.finish(other, Outcome(JobState.SENT))
    assert await stores.queue.finish(lease, Outcome(JobState.SENT, provider_message_id="m-1"))
    assert not await stores.queue.finish(lease, Outcome(JobState.FAILED))  # once only
    stored = await stores.jobs.get(job.id)
    assert stored is not None
    assert (stored.state, stored.attempts, stored.provider_message_id) == ("sent", 1, "m-1")
    assert stored.finished_at is not None
    kinds = [(e.kind, e.code, e.to_state) for e in await stores.jobs.events(job.id)]
    assert kinds == [
        ("state", "enqueued", "queued"),
        ("state", None, "running"),
        ("attempt", "started", None),
        ("state", None, "sent"),
    ]


async def test_retry_later_requeues_after_the_delay(stores: Stores) -> None:
    mailbox = await setup(stores)
    job, _ = await stores.jobs.enqueue(new_job(mailbox))
    [claimed] = await stores.queue.claim("w", 1, LEASE)
    run_after = utcnow() + dt.timedelta(minutes=5)
    await stores.queue.retry_later(
        claimed.lease, run_after, Outcome(JobState.QUEUED, "throttled", "HTTP 429"), failure=False
    )
    stored = await stores.jobs.get(job.id)
    assert stored is not None
    assert (stored.state, stored.transient_failures, stored.last_error_code) == (
        "queued",
        0,
        "throttled",
    )
    assert abs((stored.run_after - run_after).total_seconds()) < 1
    assert await stores.queue.claim("w", 1, LEASE) == []
    async with stores.sessions.begin() as session:
        await session.execute(update(Job).values(run_after=utcnow()))
    [claimed] = await stores.queue.claim("w", 1, LEASE)
    await stores.queue.retry_later(
        claimed.lease,
        utcnow(),
        Outcome(JobState.QUEUED, "network", "connection reset"),
        failure=True,
    )
    stored = await stores.jobs.get(job.id)
    assert stored is not None and stored.transient_failures == 1


async def test_expired_leases_requeue_or_become_unknown(stores: Stores) -> None:
    mailbox = await setup(stores)
    idle, _ = await stores.jobs.enqueue(new_job(mailbox, subject="idle"))
    in_flight, _ = await stores.jobs.enqueue(new_job(mailbox, subject="in flight"))
    claims = {c.job.id: c.lease for c in await stores.queue.claim("dead-worker", 2, LEASE)}
    assert await stores.queue.start_attempt(claims[in_flight.id])
    await expire_leases(stores.sessions)
    assert await stores.queue.recover_expired_leases() == (1, 1)
    idle_now, flight_now = await stores.jobs.get(idle.id), await stores.jobs.get(in_flight.id)
    assert idle_now is not None and flight_now is not None
    assert idle_now.state == "queued"
    assert (flight_now.state, flight_now.last_error_code) == ("unknown", "worker_lost")
    assert not await stores.queue.finish(claims[in_flight.id], Outcome(JobState.SENT))


async def test_hold_release_and_cancel_for_a_mailbox(stores: Stores) -> None:
    mailbox = await setup(stores)
    jobs = [(await stores.jobs.enqueue(new_job(mailbox, subject=f"s{n}")))[0] for n in range(3)]
    await stores.mailboxes.set_state(
        mailbox.id, MailboxState.REAUTH_REQUIRED, "invalid_grant", expected=["connected"]
    )
    assert (
        await stores.queue.hold_for_mailbox(mailbox.id, "invalid_grant", "the grant was revoked")
        == 3
    )
    assert await stores.queue.claim("w", 10, LEASE) == []
    assert await stores.jobs.release_held(mailbox.id) == 3
    assert (
        await stores.jobs.cancel_pending_for_mailbox(mailbox.id, "mailbox_disconnected", "gone")
        == 3
    )
    for job in jobs:
        stored = await stores.jobs.get(job.id)
        assert stored is not None
        assert (stored.state, stored.last_error_code) == ("cancelled", "mailbox_disconnected")


async def test_client_cancel_only_before_running(stores: Stores) -> None:
    mailbox = await setup(stores)
    queued, _ = await stores.jobs.enqueue(new_job(mailbox, subject="a"))
    cancelled = await stores.jobs.cancel(queued.id, mailbox.account_id, actor="key")
    assert cancelled is not None and cancelled.state == "cancelled"
    running, _ = await stores.jobs.enqueue(new_job(mailbox, subject="b"))
    await stores.queue.claim("w", 1, LEASE)
    still = await stores.jobs.cancel(running.id, mailbox.account_id, actor="key")
    assert still is not None and still.state == "running"
    assert await stores.jobs.cancel(running.id, "acc_other", actor="key") is None


async def test_deadline_fails_waiting_jobs(stores: Stores) -> None:
    mailbox = await setup(stores)
    job, _ = await stores.jobs.enqueue(new_job(mailbox))
    async with stores.sessions.begin() as session:
        await session.execute(
            update(Job).where(Job.id == job.id).values(deadline=utcnow() - dt.timedelta(seconds=1))
        )
    assert await stores.queue.fail_past_deadline() == 1
    stored = await stores.jobs.get(job.id)
    assert stored is not None
    assert (stored.state, stored.last_error_code) == ("failed", "deadline_exceeded")


async def test_jobs_are_scoped_to_their_account(stores: Stores) -> None:
    mailbox = await setup(stores)
    job, _ = await stores.jobs.enqueue(new_job(mailbox))
    assert await stores.jobs.get(job.id, mailbox.account_id) is not None
    assert await stores.jobs.get(job.id, "acc_someone_else") is None
    counts = await stores.queue.count_by_state()
    assert counts["queued"] == 1 and counts["sent"] == 0
