"""``JobStore.enqueue_many``: many jobs in one transaction, idempotency per job, on SQLite and
PostgreSQL; and how few statements one enqueue takes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import DBAPIError

from mailbox_worker.db.models import Job, JobContent, JobEvent
from mailbox_worker.errors import Conflict
from mailbox_worker.jobs.store import NewJob

from .conftest import Stores


def new_job(
    account_id: str, mailbox_id: str, key: str | None, digest: str = "a", subject: str = "s"
) -> NewJob:
    return NewJob(
        account_id=account_id,
        mailbox_id=mailbox_id,
        mode="send",
        payload={"to": [{"address": "ap@fabrikam.example"}], "subject": subject, "text": "hi"},
        request_sha256=digest,
        message_id_domain="contoso.example",
        idempotency_key=key,
    )


@contextmanager
def statements(stores: Stores) -> Iterator[list[str]]:
    """The first three words of each SQL statement sent to the database meanwhile (one per
    round-trip)."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(" ".join(str(args[2]).split()[:3]).upper())

    target = stores.engine.sync_engine
    event.listen(target, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(target, "before_cursor_execute", record)


async def count(stores: Stores, model: Any) -> int:
    async with stores.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_each_job_gets_its_own_idempotent_answer(stores: Stores) -> None:
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    (first_result,) = await stores.jobs.enqueue_many([new_job(account.id, mailbox.id, "k1")])
    assert not isinstance(first_result, Conflict)
    first, created = first_result
    assert created

    results = await stores.jobs.enqueue_many(
        [
            new_job(account.id, mailbox.id, "k1"),  # the same request again: the first job
            new_job(account.id, mailbox.id, "k1", digest="b"),  # the key, another request
            new_job(account.id, mailbox.id, None, subject="unkeyed"),  # no key: always new
            new_job(account.id, mailbox.id, "k2", subject="k2"),
            new_job(account.id, mailbox.id, "k2", subject="k2"),  # twice: the one job
            new_job(account.id, mailbox.id, "k3", subject="k3"),
            new_job(account.id, mailbox.id, "k3", digest="c"),
        ]
    )

    replay = results[0]
    assert not isinstance(replay, Conflict) and (replay[0].id, replay[1]) == (first.id, False)
    assert isinstance(results[1], Conflict) and results[1].code == "idempotency_key_reused"
    unkeyed, k2, k2_again, k3 = results[2], results[3], results[4], results[5]
    assert not isinstance(unkeyed, Conflict) and unkeyed[1]
    assert not isinstance(k2, Conflict) and not isinstance(k2_again, Conflict)
    assert (k2[1], k2_again[1], k2_again[0].id) == (True, False, k2[0].id)
    assert not isinstance(k3, Conflict) and k3[1]
    assert isinstance(results[6], Conflict)
    # 4 jobs in all (k1, the unkeyed one, k2, k3), each with its content and enqueued event.
    assert await count(stores, Job) == 4
    assert await count(stores, JobContent) == 4
    assert await count(stores, JobEvent) == 4
    for result, subject in ((unkeyed, "unkeyed"), (k2, "k2"), (k3, "k3")):
        assert not isinstance(result, Conflict)
        assert await stores.jobs.payload(result[0].id) == {
            "to": [{"address": "ap@fabrikam.example"}],
            "subject": subject,
            "text": "hi",
        }


async def test_a_new_job_takes_one_insert_per_table_and_no_read(stores: Stores) -> None:
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    await stores.jobs.enqueue(new_job(account.id, mailbox.id, "warm"))  # caches, connections

    with statements(stores) as sent:
        await stores.jobs.enqueue(new_job(account.id, mailbox.id, "k1"))
    # One INSERT each: the job, its content, its event (an expired key is forgotten only once
    # it conflicts). On PostgreSQL the job, its content, its event and the wake-up of the
    # workers (NOTIFY, sent on commit) are one statement (jobs/enqueue_sql.py).
    inserts = (
        ["WITH INPUT AS"]
        if stores.engine.dialect.name == "postgresql"
        else ["INSERT INTO JOBS", "INSERT INTO JOB_CONTENTS", "INSERT INTO JOB_EVENTS"]
    )
    assert [kind for kind in sent if not kind.startswith(("BEGIN", "COMMIT"))] == inserts, sent

    with statements(stores) as sent:
        results = await stores.jobs.enqueue_many(
            [new_job(account.id, mailbox.id, f"many-{number}") for number in range(50)]
        )
    assert all(not isinstance(result, Conflict) and result[1] for result in results)
    assert [kind for kind in sent if kind.startswith(("INSERT", "WITH"))] == inserts, sent

    with statements(stores) as sent:
        replayed = await stores.jobs.enqueue(new_job(account.id, mailbox.id, "k1"))
    assert not replayed[1]
    assert [kind for kind in sent if kind.startswith("SELECT")] == [
        "SELECT JOBS.ID, JOBS.ACCOUNT_ID,"
    ]  # the first job is read only when the key conflicted


async def test_concurrent_requests_with_one_key_make_one_job(stores: Stores) -> None:
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)

    results = await asyncio.gather(
        *(stores.jobs.enqueue(new_job(account.id, mailbox.id, "same")) for _ in range(5))
    )

    assert sorted(created for _, created in results) == [False, False, False, False, True]
    assert len({job.id for job, _ in results}) == 1
    assert await count(stores, Job) == 1
    assert await count(stores, JobEvent) == 1


async def test_a_value_too_long_for_its_column_is_refused_not_cut(stores: Stores) -> None:
    """The PostgreSQL inserts pass each column as an array, or for one job as a value
    (jobs/enqueue_sql.py), cast to its type without a length: a value longer than the column
    is refused, as a plain insert refuses it, rather than stored cut short (SQLite does not
    check lengths)."""
    if stores.engine.dialect.name != "postgresql":
        pytest.skip("SQLite stores a string of any length")
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    long_domain = ".".join(["d" * 60] * 5)  # the Message-ID, <job_…@domain>, over 300
    job = NewJob(
        **{**new_job(account.id, mailbox.id, "k").__dict__, "message_id_domain": long_domain}
    )
    with pytest.raises(DBAPIError, match="too long"):
        await stores.jobs.enqueue(job)
    # The one-job path's statement binds each value on its own (INSERT_JOB_CHECKED).
    with pytest.raises(DBAPIError, match="too long"):
        await stores.jobs.enqueue_for_mailboxes(account.id, [mailbox.id], lambda _: [job])
    assert await count(stores, JobContent) == 0
