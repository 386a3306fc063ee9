"""Single-job enqueues that arrive together share one transaction (``JobStore._single_calls``,
a ``Coalescer``): one read of their mailboxes, one insert of their jobs, one commit. Each call
still gets only its own answer, sees only its own account's mailbox, and fails alone. On both
databases.

``asyncio.gather`` starts every call before the first is written: the first call's writer
task runs after all of them have been submitted, so they make one batch."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest
from sqlalchemy import select, text

from mailbox_worker.db.mailboxes import lock_for_state_change
from mailbox_worker.db.models import Job, Mailbox
from mailbox_worker.errors import Conflict
from mailbox_worker.jobs import store as store_module
from mailbox_worker.jobs.store import NewJob, Prepare

from .conftest import Stores
from .test_enqueue_mailbox_state import preparing, waiting_for_a_lock
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


# PostgreSQL: requests that arrive together on mailboxes the process has read take the
# unlocked path together (``JobStore._enqueue_unlocked``): one checked insert, no transaction.
# The shared fixtures' backend parameter narrowed to PostgreSQL, as in test_claim_function.py.
ON_POSTGRESQL = [pytest.param("postgresql", marks=pytest.mark.postgres)]


async def warm(stores: Stores, mailboxes: Sequence[Mailbox]) -> None:
    """Each mailbox read by the process (a job enqueued on it)."""
    for mailbox in mailboxes:
        await stores.jobs.enqueue(new_job(mailbox.account_id, mailbox.id, None))


@pytest.mark.parametrize("migrated_database_url", ON_POSTGRESQL, indirect=True)
async def test_together_on_mailboxes_read_before_is_one_statement(stores: Stores) -> None:
    acme = await stores.accounts.create_account("acme")
    globex = await stores.accounts.create_account("globex")
    mailboxes = [await stores.connected_mailbox(acme.id), await stores.connected_mailbox(globex.id)]
    await stores.jobs.enqueue_for_mailboxes(
        acme.id, [mailboxes[0].id], preparing([new_job(acme.id, mailboxes[0].id, None)])
    )
    await stores.jobs.enqueue_for_mailboxes(
        globex.id, [mailboxes[1].id], preparing([new_job(globex.id, mailboxes[1].id, None)])
    )

    with statements(stores) as sent:
        answers = await asyncio.gather(
            *(
                stores.jobs.enqueue_for_mailboxes(
                    mailbox.account_id,
                    [mailbox.id],
                    preparing([new_job(mailbox.account_id, mailbox.id, f"k{i}")]),
                )
                for i, mailbox in enumerate([*mailboxes, *mailboxes])
            )
        )

    assert sent == ["WITH INPUT AS"], sent  # no BEGIN, no read, no COMMIT
    assert all(answer[0][1] for answer in answers)  # type: ignore[index]
    assert (await stores.queue.count_by_state()).get("queued") == 6


@pytest.mark.parametrize("migrated_database_url", ON_POSTGRESQL, indirect=True)
async def test_together_one_mailbox_changed_sends_all_by_the_locking_read(stores: Stores) -> None:
    """One of two mailboxes disconnected since the process read it: the checked insert
    inserts nothing, and the locking read answers every request, by the mailboxes as they
    are now."""
    account = await stores.accounts.create_account("acme")
    kept = await stores.connected_mailbox(account.id)
    lost = await stores.connected_mailbox(account.id)
    for mailbox in (kept, lost):
        await stores.jobs.enqueue_for_mailboxes(
            account.id, [mailbox.id], preparing([new_job(account.id, mailbox.id, None)])
        )
    await stores.mailboxes.set_state(
        lost.id, "disconnected", "disconnected_by_admin", expected=["connected"]
    )
    seen: list[str] = []

    def refusing_disconnected(mailbox_id: str) -> Prepare:
        def prepare(mailboxes: Mapping[str, Mailbox]) -> Sequence[NewJob]:
            seen.append(f"{mailbox_id[-4:]}:{mailboxes[mailbox_id].state}")
            if mailboxes[mailbox_id].state != "connected":
                return []  # as the intake refuses a disconnected mailbox's request
            return [new_job(account.id, mailbox_id, None)]

        return prepare

    with statements(stores) as sent:
        answers = await asyncio.gather(
            stores.jobs.enqueue_for_mailboxes(
                account.id, [kept.id], refusing_disconnected(kept.id)
            ),
            stores.jobs.enqueue_for_mailboxes(
                account.id, [lost.id], refusing_disconnected(lost.id)
            ),
        )

    assert [len(answer) for answer in answers] == [1, 0]
    # Prepared from the snapshots (both connected), then again under the lock.
    assert seen == [
        f"{kept.id[-4:]}:connected",
        f"{lost.id[-4:]}:connected",
        f"{kept.id[-4:]}:connected",
        f"{lost.id[-4:]}:disconnected",
    ]
    assert job_inserts(sent) == 2, sent  # the checked one (nothing), the locking path's
    assert (await stores.queue.count_by_state()).get("queued") == 3


@pytest.mark.parametrize("migrated_database_url", ON_POSTGRESQL, indirect=True)
async def test_together_a_state_change_under_way_is_waited_for(stores: Stores) -> None:
    """A change holding one of the mailboxes (``FOR UPDATE``, not committed) when the
    checked insert comes: the insert waits, finds that mailbox changed once the change
    commits (PostgreSQL reads the row again, its join included), and inserts nothing."""
    account = await stores.accounts.create_account("acme")
    kept = await stores.connected_mailbox(account.id)
    lost = await stores.connected_mailbox(account.id)
    await warm(stores, [kept, lost])
    states: list[str] = []

    def prepare_on(mailbox_id: str) -> Prepare:
        def prepare(mailboxes: Mapping[str, Mailbox]) -> Sequence[NewJob]:
            states.append(mailboxes[mailbox_id].state)
            if mailboxes[mailbox_id].state != "connected":
                return []
            return [new_job(account.id, mailbox_id, None)]

        return prepare

    async with stores.sessions.begin() as session:
        await lock_for_state_change(session, lost.id)
        await session.execute(
            text("UPDATE mailboxes SET state = 'disconnected' WHERE id = :id"), {"id": lost.id}
        )
        together = asyncio.gather(
            stores.jobs.enqueue_for_mailboxes(account.id, [kept.id], prepare_on(kept.id)),
            stores.jobs.enqueue_for_mailboxes(account.id, [lost.id], prepare_on(lost.id)),
        )
        async with asyncio.timeout(30):
            while not await waiting_for_a_lock(stores):
                await asyncio.sleep(0.01)
        assert (await stores.queue.count_by_state()).get("queued") == 2  # nothing yet
    async with asyncio.timeout(30):
        answers = await together
    assert [len(answer) for answer in answers] == [1, 0]
    assert states == ["connected", "connected", "connected", "disconnected"]
    assert (await stores.queue.count_by_state()).get("queued") == 3


async def test_a_write_of_requests_together_carries_at_most_its_bytes(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "SINGLE_CALLS_MOST_BYTES", 1_000)
    jobs = store_module.JobStore(stores.sessions)
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)

    with statements(stores) as sent:
        answers = await asyncio.gather(
            *(
                jobs.enqueue_for_mailboxes(
                    account.id,
                    [mailbox.id],
                    preparing([new_job(account.id, mailbox.id, f"k{i}")]),
                    size=600,
                )
                for i in range(3)
            )
        )

    assert job_inserts(sent) == 3, sent  # 600 + 600 would be over 1,000: one each
    assert all(answer[0][1] for answer in answers)  # type: ignore[index]


@pytest.mark.parametrize("migrated_database_url", ON_POSTGRESQL, indirect=True)
async def test_requests_committed_together_keep_their_answers_when_the_rest_fails(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first request's job commits by the checked statement; the second's (refused by
    the mailbox as last read) goes to the locking path, which fails: only the second gets
    the failure, the first its job."""
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    await warm(stores, [mailbox])

    async def failing(calls: Sequence[object]) -> list[object]:
        raise RuntimeError("database away")

    monkeypatch.setattr(stores.jobs, "_enqueue_locking", failing)
    committed, failed = await asyncio.gather(
        stores.jobs.enqueue_for_mailboxes(
            account.id, [mailbox.id], preparing([new_job(account.id, mailbox.id, "kept")])
        ),
        stores.jobs.enqueue_for_mailboxes(account.id, [mailbox.id], preparing([])),
        return_exceptions=True,
    )

    assert isinstance(failed, RuntimeError)
    ((job, created),) = committed  # type: ignore[misc]
    assert created and job.idempotency_key == "kept"


@pytest.mark.parametrize("migrated_database_url", ON_POSTGRESQL, indirect=True)
async def test_jobs_together_are_inserted_in_the_order_of_their_keys(stores: Stores) -> None:
    """Two statements inserting the same keys in opposite orders each waited for the other's
    rows and deadlocked; in the keys' order they cannot. Read back by their place in the
    table (a new table fills in insertion order)."""
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    await warm(stores, [mailbox])
    keys = [f"key-{i:02d}" for i in range(12)]

    await asyncio.gather(
        *(
            stores.jobs.enqueue_for_mailboxes(
                account.id, [mailbox.id], preparing([new_job(account.id, mailbox.id, key)])
            )
            for key in reversed(keys)
        )
    )

    async with stores.sessions() as session:
        stored = list(
            await session.scalars(
                text(
                    "SELECT idempotency_key FROM jobs WHERE idempotency_key LIKE 'key-%' "
                    "ORDER BY ctid"
                )
            )
        )
    assert stored == keys
