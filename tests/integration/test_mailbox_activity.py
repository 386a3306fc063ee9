"""``MailboxActivityStore``: a mailbox's jobs in numbers, what ``mailboxes show`` gives without
a support grant (docs/privacy.md PP-3). Runs on SQLite, and on PostgreSQL when configured."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update

from mailbox_worker.db.mailbox_activity import MailboxActivityStore
from mailbox_worker.db.models import Job
from mailbox_worker.jobs.store import NewJob
from mailbox_worker.states import JobState

from .conftest import Stores


async def test_counts_every_state_and_names_the_latest_error(stores: Stores) -> None:
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    other = await stores.connected_mailbox(account.id, "other@contoso.example")
    jobs = [
        (await stores.jobs.enqueue(NewJob(account.id, box.id, "send", {}, str(n), "x")))[0]
        for n, box in enumerate([mailbox, mailbox, mailbox, other])
    ]
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    changes = [
        (jobs[0], JobState.FAILED, "recipient_rejected", base),
        (jobs[1], JobState.QUEUED, "throttled", base + dt.timedelta(hours=1)),
        (jobs[3], JobState.FAILED, "other_mailbox", base + dt.timedelta(hours=2)),
    ]
    async with stores.sessions.begin() as session:
        for job, state, code, when in changes:
            await session.execute(
                update(Job)
                .where(Job.id == job.id)
                .values(state=state, last_error_code=code, updated_at=when)
            )

    activity = await MailboxActivityStore(stores.sessions).activity(mailbox.id)
    empty = await MailboxActivityStore(stores.sessions).activity("mbx_none")

    assert activity.jobs_by_state == {state.value: 0 for state in JobState} | {
        "queued": 2,
        "failed": 1,
    }
    assert activity.last_error_code == "throttled"
    assert activity.last_error_at == base + dt.timedelta(hours=1)
    assert set(empty.jobs_by_state.values()) == {0} and empty.last_error_code is None
