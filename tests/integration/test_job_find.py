"""``JobStore.find``: filters and keyset pages, on SQLite and PostgreSQL alike; on PostgreSQL,
the account's list is read through its index."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.dialects import postgresql

from mailbox_worker.db.mailboxes import MailboxStore
from mailbox_worker.db.models import Job, Mailbox
from mailbox_worker.jobs.store import JobFilter, JobStore, NewJob, Position, find_query
from mailbox_worker.states import JobState, MailboxState
from tests.integration.conftest import Stores

START = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)


class SteppedClock:
    """A clock that stands still until a test moves it."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now


def new_job(mailbox: Mailbox, reference: str | None = None) -> NewJob:
    return NewJob(
        account_id=mailbox.account_id,
        mailbox_id=mailbox.id,
        mode="send",
        payload={"subject": "Invoice"},
        request_sha256="0" * 64,
        message_id_domain="contoso.example",
        reference=reference,
    )


async def every_page(jobs: JobStore, wanted: JobFilter, limit: int) -> list[list[Job]]:
    pages: list[list[Job]] = []
    after: Position | None = None
    while True:
        page = await jobs.find(wanted, limit, after)
        if not page:
            return pages
        pages.append(page)
        after = (page[-1].created_at, page[-1].id)


async def test_pages_cover_every_job_once_even_when_created_at_the_same_instant(
    stores: Stores,
) -> None:
    clock = SteppedClock()
    jobs = JobStore(stores.sessions, clock)
    account = await stores.accounts.create_account("Contoso")
    mailbox = await stores.connected_mailbox(account.id)
    created = [(await jobs.enqueue(new_job(mailbox)))[0].id for _ in range(5)]  # one instant
    clock.now += dt.timedelta(seconds=1)
    newest = (await jobs.enqueue(new_job(mailbox)))[0].id

    pages = await every_page(jobs, JobFilter(account_id=account.id), limit=2)

    assert [len(page) for page in pages] == [2, 2, 2]
    listed = [job.id for page in pages for job in page]
    assert listed == [newest, *sorted(created, reverse=True)]


async def test_a_job_added_between_pages_shifts_no_page(stores: Stores) -> None:
    clock = SteppedClock()
    jobs = JobStore(stores.sessions, clock)
    account = await stores.accounts.create_account("Contoso")
    mailbox = await stores.connected_mailbox(account.id)
    for _ in range(4):
        clock.now += dt.timedelta(seconds=1)
        await jobs.enqueue(new_job(mailbox))
    wanted = JobFilter(account_id=account.id)
    first = await jobs.find(wanted, 2)

    clock.now += dt.timedelta(seconds=1)
    await jobs.enqueue(new_job(mailbox))
    second = await jobs.find(wanted, 2, (first[-1].created_at, first[-1].id))

    everything = await jobs.find(wanted, 10)
    assert [job.id for job in first + second] == [job.id for job in everything[1:]]


async def test_filters_combine_and_the_time_range_is_half_open(stores: Stores) -> None:
    clock = SteppedClock()
    jobs = JobStore(stores.sessions, clock)
    account = await stores.accounts.create_account("Contoso")
    other_account = await stores.accounts.create_account("Fabrikam")
    billing = await stores.connected_mailbox(account.id)
    sales = await stores.connected_mailbox(account.id, address="sales@contoso.example")
    elsewhere = await stores.connected_mailbox(other_account.id)
    made: dict[str, Job] = {}
    for name, mailbox, reference in [
        ("first", billing, "INV-1"),
        ("second", sales, "INV-1"),
        ("third", billing, "INV-2"),
        ("foreign", elsewhere, "INV-1"),
    ]:
        clock.now += dt.timedelta(minutes=1)
        made[name] = (await jobs.enqueue(new_job(mailbox, reference)))[0]
    await jobs.cancel(made["second"].id, account.id, actor="test")

    async def found(**wanted: Any) -> set[str]:
        page = await jobs.find(JobFilter(account_id=account.id, **wanted), 50)
        return {name for name, job in made.items() if job.id in {j.id for j in page}}

    assert await found() == {"first", "second", "third"}
    assert await found(reference="INV-1") == {"first", "second"}
    assert await found(mailbox_id=billing.id) == {"first", "third"}
    assert await found(state=(JobState.CANCELLED,)) == {"second"}
    assert await found(state=(JobState.CANCELLED, JobState.QUEUED)) == {"first", "second", "third"}
    assert await found(reference="INV-1", state=JobState.QUEUED) == {"first"}
    second_at = made["second"].created_at
    assert await found(created_after=second_at) == {"second", "third"}
    assert await found(created_before=second_at) == {"first"}
    assert await found(created_after=second_at, created_before=made["third"].created_at) == {
        "second"
    }


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("wanted", "index"),
    [
        (JobFilter(account_id="acc_1"), "ix_jobs_account_id_created_at_id"),
        (
            JobFilter(account_id="acc_1", state=("queued", "held")),
            "ix_jobs_account_id_created_at_id",
        ),
        (
            JobFilter(account_id="acc_1", reference="INV-1"),
            "ix_jobs_account_id_reference_created_at_id",
        ),
    ],
)
async def test_postgresql_reads_an_accounts_jobs_through_an_index(
    postgres_stores: Stores, wanted: JobFilter, index: str
) -> None:
    after = (START, "job_ffff")
    statement = find_query(wanted, 51, after).compile(
        dialect=postgresql.dialect(),  # type: ignore[no-untyped-call]
        compile_kwargs={"literal_binds": True},
    )
    async with postgres_stores.engine.connect() as connection:
        # The tables are nearly empty: a sequential scan would always win. Forbidding it
        # asks whether the index can serve the query at all, in order, without a sort.
        await connection.execute(text("SET enable_seqscan = off"))
        plan = "\n".join((await connection.execute(text(f"EXPLAIN {statement}"))).scalars().all())
    assert index in plan, plan
    assert "Sort" not in plan, plan


@pytest.fixture
def postgres_stores(stores: Stores) -> Stores:
    if stores.engine.dialect.name != "postgresql":
        pytest.skip("an index plan is PostgreSQL's")
    return stores


async def test_mailbox_pages_leave_out_disconnected_ones_when_asked(stores: Stores) -> None:
    clock = SteppedClock()
    mailboxes = MailboxStore(stores.sessions, clock)
    account = await stores.accounts.create_account("Contoso")
    made = []
    for _ in range(3):
        clock.now += dt.timedelta(seconds=1)
        made.append(await mailboxes.create(account.id, "microsoft", ["send"], actor="test"))
    await mailboxes.set_state(
        made[1].id, MailboxState.DISCONNECTED, "test", expected=[MailboxState.PENDING_CONSENT]
    )

    first = await mailboxes.list(account.id, limit=1, include_disconnected=False)
    rest = await mailboxes.list(
        account.id,
        limit=5,
        after=(first[-1].created_at, first[-1].id),
        include_disconnected=False,
    )

    assert [m.id for m in first + rest] == [made[0].id, made[2].id]
    assert [m.id for m in await mailboxes.list(account.id)] == [m.id for m in made]
