"""Every entry of a job into sent, drafted, failed, unknown, cancelled or held adds its
``job.<state>`` outbox event in the transaction of the transition (on SQLite and PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from mailbox_worker.clock import utcnow
from mailbox_worker.db.models import Job, Mailbox, OutboxEvent
from mailbox_worker.events.outbox import Outbox, outbox_row
from mailbox_worker.jobs import job_writes, transitions
from mailbox_worker.jobs.queue import Lease, lease_owner
from mailbox_worker.jobs.store import NewJob
from mailbox_worker.jobs.transitions import Outcome
from mailbox_worker.states import JobState, MailboxState

from .conftest import Stores, expire_leases

LEASE = dt.timedelta(seconds=60)


def new_job(mailbox: Mailbox, subject: str = "Invoice 1", *, held: bool = False) -> NewJob:
    payload = {"to": [{"address": "ap@fabrikam.example"}], "subject": subject, "text": "hi"}
    return NewJob(
        account_id=mailbox.account_id,
        mailbox_id=mailbox.id,
        mode="send",
        payload=payload,
        request_sha256=subject,
        message_id_domain="contoso.example",
        reference=f"INV-{subject}",
        held=held,
    )


async def setup(stores: Stores) -> Mailbox:
    account = await stores.accounts.create_account("acme")
    return await stores.connected_mailbox(account.id)


async def job_events(stores: Stores, job_id: str) -> list[OutboxEvent]:
    async with stores.sessions() as session:
        query = select(OutboxEvent).where(OutboxEvent.ordering_key == job_id)
        return list((await session.scalars(query.order_by(OutboxEvent.id))).all())


def expected(job: Job, state: str, code: str | None, **provider_ids: str) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "mailbox_id": job.mailbox_id,
        "reference": job.reference,
        "state": state,
        "code": code,
        "provider_message_id": provider_ids.get("provider_message_id"),
        "provider_draft_id": provider_ids.get("provider_draft_id"),
    }


@pytest.mark.parametrize(
    "outcome",
    [
        Outcome(JobState.SENT),
        Outcome(JobState.DRAFTED, provider_message_id="AAMk-1", provider_draft_id="AAMk-1"),
        Outcome(JobState.FAILED, "invalid_recipients", "Graph refused: HTTP 400"),
        Outcome(JobState.UNKNOWN, "provider_error_ambiguous", "HTTP 500"),
        Outcome(JobState.CANCELLED, "mailbox_disconnected", "the mailbox is gone"),
    ],
    ids=lambda outcome: str(outcome.state),
)
async def test_each_outcome_of_a_worker_is_announced(stores: Stores, outcome: Outcome) -> None:
    mailbox = await setup(stores)
    job, _ = await stores.jobs.enqueue(new_job(mailbox))
    [claimed] = await stores.queue.claim("w1", 1, LEASE)
    assert await stores.queue.start_attempt(claimed.lease)
    other = Lease(job.id, "w2", lease_owner("w2"))
    assert not await stores.queue.finish(other, outcome)  # not its lease: no event
    assert await job_events(stores, job.id) == []
    assert await stores.queue.finish(claimed.lease, outcome)
    [event] = await job_events(stores, job.id)
    ids = {
        name: getattr(outcome, name)
        for name in ("provider_message_id", "provider_draft_id")
        if getattr(outcome, name) is not None
    }
    assert (event.kind, event.account_id) == (f"job.{outcome.state}", mailbox.account_id)
    assert event.payload == expected(job, outcome.state, outcome.code, **ids)


async def test_provider_ids_recorded_before_the_outcome_are_announced(stores: Stores) -> None:
    mailbox = await setup(stores)
    job, _ = await stores.jobs.enqueue(new_job(mailbox))
    [claimed] = await stores.queue.claim("w1", 1, LEASE)
    assert await stores.queue.record_provider_ids(
        claimed.lease, Outcome(JobState.RUNNING, provider_draft_id="draft-1")
    )
    assert await stores.queue.finish(claimed.lease, Outcome(JobState.UNKNOWN, "timeout", "t/o"))
    [event] = await job_events(stores, job.id)
    assert event.payload == expected(job, "unknown", "timeout", provider_draft_id="draft-1")


async def test_worker_hold_and_mailbox_moves_are_announced(stores: Stores) -> None:
    mailbox = await setup(stores)
    running, _ = await stores.jobs.enqueue(new_job(mailbox, "running"))
    [claimed] = await stores.queue.claim("w1", 1, LEASE)
    waiting, _ = await stores.jobs.enqueue(new_job(mailbox, "waiting"))
    await stores.mailboxes.set_state(
        mailbox.id, MailboxState.REAUTH_REQUIRED, "invalid_grant", expected=["connected"]
    )
    assert await stores.queue.hold_for_mailbox(mailbox.id, "invalid_grant", "revoked") == 1
    assert await stores.queue.hold(claimed.lease, "invalid_grant", "revoked")
    late, _ = await stores.jobs.enqueue(new_job(mailbox, "late", held=True))
    assert await stores.jobs.release_held(mailbox.id) == 3  # back to queued: not announced
    assert await stores.jobs.cancel_pending_for_mailbox(mailbox.id, "mailbox_disconnected", "x")
    for job, held_code in (
        (running, "invalid_grant"),
        (waiting, "invalid_grant"),
        (late, "enqueued"),
    ):
        events = await job_events(stores, job.id)
        assert [(event.kind, event.payload) for event in events] == [
            ("job.held", expected(job, "held", held_code)),
            ("job.cancelled", expected(job, "cancelled", "mailbox_disconnected")),
        ]


async def test_lease_recovery_announces_only_unknown(stores: Stores) -> None:
    mailbox = await setup(stores)
    idle, _ = await stores.jobs.enqueue(new_job(mailbox, "idle"))
    in_flight, _ = await stores.jobs.enqueue(new_job(mailbox, "in flight"))
    leases = {c.job.id: c.lease for c in await stores.queue.claim("dead-worker", 2, LEASE)}
    assert await stores.queue.start_attempt(leases[in_flight.id])
    await expire_leases(stores.sessions)
    assert await stores.queue.recover_expired_leases() == (1, 1)
    assert await job_events(stores, idle.id) == []
    [event] = await job_events(stores, in_flight.id)
    assert (event.kind, event.payload) == (
        "job.unknown",
        expected(in_flight, "unknown", "worker_lost"),
    )


async def test_deadline_and_client_cancel_are_announced(stores: Stores) -> None:
    mailbox = await setup(stores)
    late, _ = await stores.jobs.enqueue(new_job(mailbox, "late"))
    cancelled, _ = await stores.jobs.enqueue(new_job(mailbox, "cancelled"))
    async with stores.sessions.begin() as session:
        await session.execute(
            update(Job).where(Job.id == late.id).values(deadline=utcnow() - dt.timedelta(1))
        )
    assert await stores.queue.fail_past_deadline() == 1
    assert await stores.jobs.cancel(cancelled.id, mailbox.account_id, actor="key_1")
    assert await stores.jobs.cancel(cancelled.id, mailbox.account_id, actor="key_1")  # again
    [failed] = await job_events(stores, late.id)
    assert (failed.kind, failed.payload) == (
        "job.failed",
        expected(late, "failed", "deadline_exceeded"),
    )
    [cancel] = await job_events(stores, cancelled.id)  # the second cancel moved nothing
    assert (cancel.kind, cancel.payload) == (
        "job.cancelled",
        expected(cancelled, "cancelled", "cancelled_by_client"),
    )


async def test_a_transition_whose_event_cannot_be_written_does_not_happen(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event is written in the transition's transaction: when the insert fails (here an
    event without an account, or one whose id is taken, refused by the database) the job
    stays where it was."""
    mailbox = await setup(stores)
    running, _ = await stores.jobs.enqueue(new_job(mailbox, "running"))
    [claimed] = await stores.queue.claim("w1", 1, LEASE)
    queued, _ = await stores.jobs.enqueue(new_job(mailbox, "queued"))
    await Outbox(stores.sessions).add(mailbox.account_id, "job.sent", {"job_id": "job_other"})
    async with stores.sessions() as session:
        taken = (await session.scalars(select(OutboxEvent.public_id))).one()

    def broken_row(
        account_id: str, kind: str, payload: dict[str, Any], at: dt.datetime | None = None
    ) -> OutboxEvent:
        row = outbox_row(account_id, kind, payload, at)
        row.account_id = None  # type: ignore[assignment]
        return row

    monkeypatch.setattr(transitions, "outbox_row", broken_row)  # what announce() calls
    monkeypatch.setattr(job_writes, "new_id", lambda prefix: taken)  # the worker's writes
    with pytest.raises(IntegrityError):
        await stores.queue.finish(claimed.lease, Outcome(JobState.SENT))
    with pytest.raises(IntegrityError):
        await stores.jobs.cancel(queued.id, mailbox.account_id, actor="key_1")
    monkeypatch.undo()
    for job, state in ((running, "running"), (queued, "queued")):
        stored = await stores.jobs.get(job.id)
        assert stored is not None and stored.state == state
        assert [event.to_state for event in await stores.jobs.events(job.id)][-1] == state
    assert await job_events(stores, running.id) == []
    assert await stores.queue.finish(claimed.lease, Outcome(JobState.SENT))
    assert [event.kind for event in await job_events(stores, running.id)] == ["job.sent"]
