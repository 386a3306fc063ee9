"""Single-job enqueues that arrive together share one transaction (``JobStore._single_calls``,
a ``Coalescer``): one read of their mailboxes, one insert of their jobs, one commit. Each call
still gets only its own answer, sees only its own account's mailbox, and fails alone. On both
databases.

``asyncio.gather`` starts every call before the first is written: the first call's writer
task runs after all of them have been submitted, so they make one batch."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from sqlalchemy import select

from mailbox_worker.db.models import Job, Mailbox
from mailbox_worker.errors import Conflict
from mailbox_worker.jobs.store import NewJob, Prepare

from .conftest import Stores
from .test_enqueue_mailbox_state import preparing
from .test_enqueue_many import new_job, statements


def job_inserts(sent: Sequence[str]) -> int:
    """The statements that insert jobs: ``INSERT INTO jobs`` (SQLite), the CTE (PostgreSQL)."""
    return sum(kind in ("INSERT INTO JOBS", "WITH INPUT AS") for kind in sent)


async def test_requests_that_arrive_together_share_one_insert(stores: Stores) -> None:
    acme = await stores.accounts.create_account("acme")
    globex = await stores.accounts.create_account("globex")
    mailboxes = [
        await stores.connected_mailbox(acme.id),
        await stores.connected_mailbox(acme.id),
        await stores.connected_mailbox(globex.id),
    ]
    await stores.jobs.enqueue(new_job(acme.id, mailboxes[0].id, "warm"))
    calls = [
        (mailbox.account_id, mailbox.id, new_job(mailbox.account_id, mailbox.id, f"k{i}"))
        for i, mailbox in enumerate([*mailboxes, mailboxes[0], mailboxes[2]])
    ]

    with statements(stores) as sent:
        answers = await asyncio.gather(
            *(
                stores.jobs.enqueue_for_mailboxes(account, [mailbox], preparing([new]))
                for account, mailbox, new in calls
            )
        )

    assert job_inserts(sent) == 1, sent
    assert sum(kind.startswith("SELECT MAILBOXES") for kind in sent) == 1, sent
    for (account, mailbox, new), answer in zip(calls, answers, strict=True):
        ((job, created),) = answer  # type: ignore[misc]
        assert created
        assert (job.account_id, job.mailbox_id, job.idempotency_key) == (
            account,
            mailbox,
            new.idempotency_key,
        )
    async with stores.sessions() as session:
        stored = set(await session.scalars(select(Job.idempotency_key)))
    assert stored == {"warm", "k0", "k1", "k2", "k3", "k4"}


async def test_a_call_that_fails_fails_alone(stores: Stores) -> None:
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)

    def broken(_: Mapping[str, Mailbox]) -> Sequence[NewJob]:
        raise RuntimeError("a bug in one request's checks")

    prepares: list[Prepare] = [
        preparing([new_job(account.id, mailbox.id, "first")]),
        broken,
        preparing([new_job(account.id, mailbox.id, "third")]),
    ]
    with statements(stores) as sent:
        answers = await asyncio.gather(
            *(stores.jobs.enqueue_for_mailboxes(account.id, [mailbox.id], p) for p in prepares),
            return_exceptions=True,
        )

    assert job_inserts(sent) == 1, sent
    first, failed, third = answers
    assert isinstance(failed, RuntimeError)
    assert [result[1] for result in first] == [True]  # type: ignore[union-attr,index]
    assert [result[1] for result in third] == [True]  # type: ignore[union-attr,index]
    async with stores.sessions() as session:
        stored = set(await session.scalars(select(Job.idempotency_key)))
    assert stored == {"first", "third"}


async def test_each_call_is_given_only_its_own_accounts_mailboxes(stores: Stores) -> None:
    acme = await stores.accounts.create_account("acme")
    globex = await stores.accounts.create_account("globex")
    ours = await stores.connected_mailbox(acme.id)
    theirs = await stores.connected_mailbox(globex.id)
    seen_by_acme: list[dict[str, str]] = []
    seen_by_globex: list[dict[str, str]] = []

    await asyncio.gather(
        # acme names globex's mailbox: it must not be given it, though the batch read it.
        stores.jobs.enqueue_for_mailboxes(acme.id, [theirs.id], preparing([], seen_by_acme)),
        stores.jobs.enqueue_for_mailboxes(
            globex.id,
            [theirs.id],
            preparing([new_job(globex.id, theirs.id, None)], seen_by_globex),
        ),
        stores.jobs.enqueue_for_mailboxes(acme.id, [ours.id], preparing([])),
    )

    assert seen_by_acme[-1] == {}
    assert seen_by_globex[-1] == {theirs.id: "connected"}


async def test_one_key_twice_together_is_one_job(stores: Stores) -> None:
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    same = new_job(account.id, mailbox.id, "invoice-7", digest="a")
    other = new_job(account.id, mailbox.id, "invoice-7", digest="b")

    first, replay, reuse = await asyncio.gather(
        stores.jobs.enqueue_for_mailboxes(account.id, [mailbox.id], preparing([same])),
        stores.jobs.enqueue_for_mailboxes(account.id, [mailbox.id], preparing([same])),
        stores.jobs.enqueue_for_mailboxes(account.id, [mailbox.id], preparing([other])),
    )

    ((job, created),) = first  # type: ignore[misc]
    ((again, created_again),) = replay  # type: ignore[misc]
    assert created and not created_again
    assert again.id == job.id
    (conflict,) = reuse
    assert isinstance(conflict, Conflict)
    assert conflict.code == "idempotency_key_reused"
    assert sum((await stores.queue.count_by_state()).values()) == 1
