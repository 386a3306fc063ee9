"""A job's last error: every transition writes its code and message together.

Each test lets a job first fail transiently with ``PREVIOUS`` (an HTTP 429), then takes one
path out of that state, and checks that the job shows the path's own code beside a message
that explains that code, never the earlier attempt's message. Same tests on both backends.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from mailbox_worker.clock import utcnow
from mailbox_worker.db.models import Job, Mailbox
from mailbox_worker.jobs.transitions import Outcome
from mailbox_worker.states import JobState, MailboxState

from .conftest import Stores, expire_leases
from .test_queue import LEASE, new_job, setup

PREVIOUS = "HTTP 429: the mailbox is throttled; retry in 30 seconds"


async def failed_once(stores: Stores, mailbox: Mailbox, subject: str = "Invoice 1") -> Job:
    """A queued job, due now, whose one attempt failed transiently with ``PREVIOUS``."""
    job, _ = await stores.jobs.enqueue(new_job(mailbox, subject=subject))
    [claimed] = await stores.queue.claim("w0", 1, LEASE)
    assert claimed.job.id == job.id
    assert await stores.queue.retry_later(
        claimed.lease, utcnow(), Outcome(JobState.QUEUED, "throttled", PREVIOUS), failure=False
    )
    stored = await stores.jobs.get(job.id)
    assert stored is not None
    assert (stored.last_error_code, stored.last_error_message) == ("throttled", PREVIOUS)
    return stored


async def last_error(stores: Stores, job_id: str) -> tuple[str, str | None, str | None]:
    stored = await stores.jobs.get(job_id)
    assert stored is not None
    return stored.state, stored.last_error_code, stored.last_error_message


async def test_client_cancel_says_the_client_cancelled(stores: Stores) -> None:
    mailbox = await setup(stores)
    job = await failed_once(stores, mailbox)
    assert await stores.jobs.cancel(job.id, mailbox.account_id, actor="api_key:k") is not None
    state, code, message = await last_error(stores, job.id)
    assert (state, code) == ("cancelled", "cancelled_by_client")
    assert message == "the client cancelled the job before it was sent"


@pytest.mark.parametrize("held_first", [False, True], ids=["queued", "held"])
async def test_cancel_for_a_mailbox_writes_the_given_message(
    stores: Stores, held_first: bool
) -> None:
    mailbox = await setup(stores)
    job = await failed_once(stores, mailbox)
    if held_first:
        await stores.queue.hold_for_mailbox(mailbox.id, "invalid_grant", "the grant was revoked")
    cancelled = await stores.jobs.cancel_pending_for_mailbox(
        mailbox.id, "mailbox_disconnected", "the mailbox was disconnected before the job ran"
    )
    assert cancelled == 1
    assert await last_error(stores, job.id) == (
        "cancelled",
        "mailbox_disconnected",
        "the mailbox was disconnected before the job ran",
    )


async def test_holding_a_mailbox_shows_why_it_needs_consent(stores: Stores) -> None:
    mailbox = await setup(stores)
    job = await failed_once(stores, mailbox)
    await stores.mailboxes.set_state(
        mailbox.id, MailboxState.REAUTH_REQUIRED, "invalid_grant", expected=["connected"]
    )
    assert await stores.queue.hold_for_mailbox(mailbox.id, "invalid_grant", "consent revoked") == 1
    assert await last_error(stores, job.id) == ("held", "invalid_grant", "consent revoked")


async def test_holding_a_running_job_shows_why(stores: Stores) -> None:
    mailbox = await setup(stores)
    job = await failed_once(stores, mailbox)
    [claimed] = await stores.queue.claim("w1", 1, LEASE)
    assert await stores.queue.hold(claimed.lease, "invalid_grant", "consent revoked")
    assert await last_error(stores, job.id) == ("held", "invalid_grant", "consent revoked")


async def test_release_says_the_mailbox_is_back(stores: Stores) -> None:
    mailbox = await setup(stores)
    job = await failed_once(stores, mailbox)
    await stores.queue.hold_for_mailbox(mailbox.id, "invalid_grant", "consent revoked")
    assert await stores.jobs.release_held(mailbox.id) == 1
    assert await last_error(stores, job.id) == (
        "queued",
        "mailbox_reconnected",
        "the mailbox was connected again; the job is queued to be sent",
    )


async def test_a_lease_lost_before_the_call_is_requeued_saying_so(stores: Stores) -> None:
    mailbox = await setup(stores)
    job = await failed_once(stores, mailbox)
    await stores.queue.claim("dead-worker", 1, dt.timedelta(seconds=-1))
    assert await stores.queue.recover_expired_leases() == (1, 0)
    state, code, message = await last_error(stores, job.id)
    assert (state, code) == ("queued", "lease_expired")
    assert message == "the worker stopped before calling the provider; the job will be retried"


async def test_a_lease_lost_in_flight_is_worker_lost(stores: Stores) -> None:
    mailbox = await setup(stores)
    job = await failed_once(stores, mailbox)
    [claimed] = await stores.queue.claim("dead-worker", 1, dt.timedelta(minutes=1))
    assert await stores.queue.start_attempt(claimed.lease)
    await expire_leases(stores.sessions)
    assert await stores.queue.recover_expired_leases() == (0, 1)
    state, code, message = await last_error(stores, job.id)
    assert (state, code) == ("unknown", "worker_lost")
    assert message is not None and message.startswith(
        "the worker stopped while the provider request was in flight"
    )


async def test_a_passed_deadline_says_so(stores: Stores) -> None:
    mailbox = await setup(stores)
    job = await failed_once(stores, mailbox)
    async with stores.sessions.begin() as session:
        await session.execute(
            update(Job).where(Job.id == job.id).values(deadline=utcnow() - dt.timedelta(seconds=1))
        )
    assert await stores.queue.fail_past_deadline() == 1
    assert await last_error(stores, job.id) == (
        "failed",
        "deadline_exceeded",
        "the job's deadline passed before it could be sent",
    )


async def test_a_permanent_failure_replaces_code_and_message(stores: Stores) -> None:
    mailbox = await setup(stores)
    job = await failed_once(stores, mailbox)
    [claimed] = await stores.queue.claim("w1", 1, LEASE)
    outcome = Outcome(JobState.FAILED, "invalid_recipients", "the provider refused every recipient")
    assert await stores.queue.finish(claimed.lease, outcome)
    assert await last_error(stores, job.id) == (
        "failed",
        "invalid_recipients",
        "the provider refused every recipient",
    )


async def test_success_clears_the_last_error(stores: Stores) -> None:
    mailbox = await setup(stores)
    job = await failed_once(stores, mailbox)
    [claimed] = await stores.queue.claim("w1", 1, LEASE)
    assert await stores.queue.finish(
        claimed.lease, Outcome(JobState.SENT, provider_message_id="m-1")
    )
    assert await last_error(stores, job.id) == ("sent", None, None)


@pytest.mark.parametrize(("code", "message"), [("throttled", None), (None, "HTTP 429")])
def test_an_outcome_takes_code_and_message_together(code: str | None, message: str | None) -> None:
    with pytest.raises(ValueError, match="together"):
        Outcome(JobState.QUEUED, code, message)
