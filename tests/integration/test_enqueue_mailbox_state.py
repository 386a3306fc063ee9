"""``JobStore.enqueue_for_mailboxes`` reads and locks the jobs' mailboxes first, in the jobs'
transaction (``FOR KEY SHARE``), and the intake checks each request against them there: a
state change (``MailboxStore.set_state``, ``mark_connected``: ``FOR UPDATE``) under way is
waited for and its outcome read, one that comes later waits for the jobs' commit, and a claim
waits for neither. So the state a job was made for is its mailbox's when the job commits, and
nothing is settled after the commit (docs/architecture.md "Enqueue and mailbox state").

On PostgreSQL a request's single job takes another path first (``JobStore._enqueue_one``): the
mailbox as last read, without a lock, and an insert that checks under the lock that it is
unchanged, else the locking path. The interleavings below are the locking path's
(``postgres_stores`` turns the other off); the last tests are the unlocked path's."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import event, text

from mailbox_worker.db.mailboxes import lock_for_state_change
from mailbox_worker.db.models import Job, Mailbox
from mailbox_worker.errors import Conflict
from mailbox_worker.jobs import store as store_module
from mailbox_worker.jobs.store import JobStore, NewJob

from .conftest import Stores
from .test_enqueue_many import new_job, statements

READ = "SELECT MAILBOXES.ID, MAILBOXES.ACCOUNT_ID,"
"""The first words of the mailboxes' read, locked or not."""


def preparing(news: Sequence[NewJob], seen: list[dict[str, str]] | None = None) -> Any:
    """A ``prepare`` that enqueues ``news`` as they are and records the mailboxes' states it
    was given."""

    def prepare(mailboxes: Mapping[str, Mailbox]) -> Sequence[NewJob]:
        if seen is not None:
            seen.append({mailbox_id: mailbox.state for mailbox_id, mailbox in mailboxes.items()})
        return news

    return prepare


async def test_the_mailboxes_are_read_once_before_the_insert(stores: Stores) -> None:
    account = await stores.accounts.create_account("acme")
    other = await stores.accounts.create_account("globex")
    first = await stores.connected_mailbox(account.id)
    second = await stores.connected_mailbox(account.id)
    foreign = await stores.connected_mailbox(other.id)
    await stores.mailboxes.require_consent_again(second, "invalid_grant", "test")
    await stores.jobs.enqueue(new_job(account.id, first.id, "warm"))  # caches, connections
    news = [new_job(account.id, mailbox.id, None) for mailbox in (first, second, first)]
    seen: list[dict[str, str]] = []

    with statements(stores) as sent:
        results = await stores.jobs.enqueue_for_mailboxes(
            account.id, [first.id, second.id, first.id, foreign.id], preparing(news, seen)
        )

    assert all(not isinstance(result, Conflict) and result[1] for result in results)
    # Only the account's own mailboxes, each once; another account's is not given.
    assert seen == [{first.id: "connected", second.id: "reauth_required"}]
    reads = [kind for kind in sent if kind.startswith("SELECT MAILBOXES")]
    assert len(reads) == 1, sent
    if stores.engine.dialect.name == "postgresql":
        # The read, then the jobs with their contents, events and NOTIFY (jobs/enqueue_sql.py).
        assert sent == [reads[0], "WITH INPUT AS"], sent
    else:
        assert sent.index(reads[0]) < sent.index("INSERT INTO JOBS"), sent


async def test_nothing_prepared_is_nothing_inserted(stores: Stores) -> None:
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    assert await stores.jobs.enqueue_for_mailboxes(account.id, [mailbox.id], preparing([])) == []
    assert sum((await stores.queue.count_by_state()).values()) == 0


@pytest.fixture
def postgres_stores(stores: Stores, monkeypatch: pytest.MonkeyPatch) -> Stores:
    """The stores on PostgreSQL, the enqueue of one job taking the locking path too."""
    if stores.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's single writer serialises enqueues and state changes already")
    monkeypatch.setattr(stores.jobs, "_autocommit", None)
    return stores


@pytest.fixture
def unlocked_stores(stores: Stores) -> Stores:
    """The stores on PostgreSQL as configured: one job's enqueue reads its mailbox unlocked."""
    if stores.engine.dialect.name != "postgresql":
        pytest.skip("the unlocked enqueue is PostgreSQL's")
    return stores


@dataclass(frozen=True)
class Pause:
    inserted: asyncio.Event
    """Set once an enqueue's jobs are inserted, its transaction still open."""
    commit: asyncio.Event
    """Set to let that enqueue commit."""


def pause_after_the_insert(monkeypatch: pytest.MonkeyPatch) -> Pause:
    """From now on, the store's PostgreSQL insert of jobs, then ``inserted`` set and a wait
    for ``commit``: the transaction stays open, the jobs inserted and not committed."""
    pause = Pause(asyncio.Event(), asyncio.Event())
    original = store_module._insert_with_companions_postgresql

    async def pausing(*args: Any, **kwargs: Any) -> dict[str, Any]:
        inserted = await original(*args, **kwargs)
        pause.inserted.set()
        await pause.commit.wait()
        return inserted

    monkeypatch.setattr(store_module, "_insert_with_companions_postgresql", pausing)
    return pause


async def waiting_for_a_lock(stores: Stores) -> int:
    async with stores.engine.connect() as connection:
        return int(
            await connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                )
            )
            or 0
        )


async def until_one_waits(stores: Stores, task: asyncio.Task[Any]) -> None:
    while not await waiting_for_a_lock(stores):
        assert not task.done()
        await asyncio.sleep(0.01)
    assert not task.done()


async def test_a_state_change_waits_for_an_enqueue_and_a_claim_does_not(
    postgres_stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    stores = postgres_stores
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    waiting, _ = await stores.jobs.enqueue(new_job(account.id, mailbox.id, "already queued"))
    paused = pause_after_the_insert(monkeypatch)
    seen: list[dict[str, str]] = []
    enqueue = asyncio.create_task(
        stores.jobs.enqueue_for_mailboxes(
            account.id, [mailbox.id], preparing([new_job(account.id, mailbox.id, "racing")], seen)
        )
    )
    async with asyncio.timeout(30):
        await paused.inserted.wait()
        # A claim meanwhile takes the mailbox's other job: it neither waits nor skips it.
        claimed = await stores.queue.claim("w", 10, dt.timedelta(minutes=1))
        assert [item.job.id for item in claimed] == [waiting.id]
        disconnect = asyncio.create_task(
            stores.mailboxes.set_state(
                mailbox.id, "disconnected", "disconnected_by_admin", expected=["connected"]
            )
        )
        await until_one_waits(stores, disconnect)  # it waits for the enqueue's commit
        paused.commit.set()
        (result,) = await enqueue
        assert await disconnect
    assert seen == [{mailbox.id: "connected"}]
    assert not isinstance(result, Conflict)
    # The disconnect committed after the job did: its sweep, run after its state change as
    # MailboxService.disconnect_mailbox runs it, sees the job.
    cancelled = await stores.jobs.cancel_pending_for_mailbox(mailbox.id, "mailbox_disconnected", "")
    assert cancelled == 1
    job = await stores.jobs.get(result[0].id)
    assert job is not None and job.state == "cancelled"


async def test_an_enqueue_waits_for_a_state_change_under_way_and_reads_its_outcome(
    postgres_stores: Stores,
) -> None:
    stores = postgres_stores
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    seen: list[dict[str, str]] = []
    async with stores.sessions.begin() as session:
        await lock_for_state_change(session, mailbox.id)
        await session.execute(
            text("UPDATE mailboxes SET state = 'disconnected' WHERE id = :id"), {"id": mailbox.id}
        )
        enqueue = asyncio.create_task(
            stores.jobs.enqueue_for_mailboxes(account.id, [mailbox.id], preparing([], seen))
        )
        async with asyncio.timeout(30):
            await until_one_waits(stores, enqueue)  # the read waits for the change's commit
    async with asyncio.timeout(30):
        assert await enqueue == []
    assert seen == [{mailbox.id: "disconnected"}]  # the change's outcome, not the state before


async def test_a_consent_waits_for_an_enqueue_too(
    postgres_stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    stores = postgres_stores
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    await stores.mailboxes.require_consent_again(mailbox, "invalid_grant", "test")
    paused = pause_after_the_insert(monkeypatch)
    held: Any = new_job(account.id, mailbox.id, "held")
    held = type(held)(**{**held.__dict__, "held": True})
    seen: list[dict[str, str]] = []
    enqueue = asyncio.create_task(
        stores.jobs.enqueue_for_mailboxes(account.id, [mailbox.id], preparing([held], seen))
    )
    async with asyncio.timeout(30):
        await paused.inserted.wait()
        consent = asyncio.create_task(
            stores.mailboxes.mark_connected(mailbox.id, "billing@contoso.example", ["Mail.Send"])
        )
        await until_one_waits(stores, consent)
        paused.commit.set()
        await enqueue
        assert await consent
    assert seen == [{mailbox.id: "reauth_required"}]
    assert await stores.jobs.release_held(mailbox.id) == 1  # the consent's sweep sees it
    row = await stores.mailboxes.get(mailbox.id)
    assert isinstance(row, Mailbox) and row.state == "connected"


async def test_a_lost_grant_waits_for_an_enqueue_too(
    postgres_stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``require_consent_again`` (the worker's lost grant) locks the row like every state
    change, so its sweep of the mailbox's queued jobs sees one enqueued meanwhile."""
    stores = postgres_stores
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    paused = pause_after_the_insert(monkeypatch)
    enqueue = asyncio.create_task(
        stores.jobs.enqueue_for_mailboxes(
            account.id, [mailbox.id], preparing([new_job(account.id, mailbox.id, "racing")])
        )
    )
    async with asyncio.timeout(30):
        await paused.inserted.wait()
        lost = asyncio.create_task(
            stores.mailboxes.require_consent_again(mailbox, "invalid_grant", "worker:w")
        )
        await until_one_waits(stores, lost)
        paused.commit.set()
        (result,) = await enqueue
        assert await lost
    assert not isinstance(result, Conflict)
    # The worker's sweep after the change (Worker._lose_grant) holds the job.
    await stores.queue.hold_for_mailbox(mailbox.id, "invalid_grant", "consent needed")
    job = await stores.jobs.get(result[0].id)
    assert job is not None and job.state == "held"


async def test_one_job_on_a_mailbox_read_before_is_one_statement(unlocked_stores: Stores) -> None:
    stores = unlocked_stores
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    seen: list[dict[str, str]] = []
    one = preparing([new_job(account.id, mailbox.id, "first")], seen)
    with statements(stores) as sent:
        (first,) = await stores.jobs.enqueue_for_mailboxes(account.id, [mailbox.id], one)
    assert sent == [READ, "WITH INPUT AS"], sent  # read once (unlocked), then the insert
    two = preparing([new_job(account.id, mailbox.id, "second")], seen)
    with statements(stores) as sent:
        (second,) = await stores.jobs.enqueue_for_mailboxes(account.id, [mailbox.id], two)
    assert sent == ["WITH INPUT AS"], sent  # no BEGIN, no read, no COMMIT
    assert seen == [{mailbox.id: "connected"}] * 2
    assert not isinstance(first, Conflict) and first[1]
    assert not isinstance(second, Conflict) and second[1]
    job = await stores.jobs.get(second[0].id)
    assert job is not None and job.state == "queued"


async def test_a_mailbox_changed_since_it_was_read_is_read_again(unlocked_stores: Stores) -> None:
    """Disconnected after the intake last read it: the insert finds it changed, inserts
    nothing, and the locking path reads it again and answers by its new state."""
    stores = unlocked_stores
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    await stores.jobs.enqueue_for_mailboxes(
        account.id, [mailbox.id], preparing([new_job(account.id, mailbox.id, "before")])
    )
    await stores.mailboxes.set_state(
        mailbox.id, "disconnected", "disconnected_by_admin", expected=["connected"]
    )
    seen: list[dict[str, str]] = []
    results = await stores.jobs.enqueue_for_mailboxes(
        account.id, [mailbox.id], preparing([new_job(account.id, mailbox.id, "after")], seen)
    )
    assert seen == [{mailbox.id: "connected"}, {mailbox.id: "disconnected"}]
    assert len(results) == 1  # what this ``prepare`` gave was inserted by the locking path
    counts = await stores.queue.count_by_state()
    assert counts.get("queued") == 2, counts


async def test_a_state_change_under_way_is_waited_for_by_the_insert(
    unlocked_stores: Stores,
) -> None:
    """A change holding the row (``FOR UPDATE``, not committed) when the insert comes: the
    insert waits for it, finds the mailbox changed once it commits, and inserts nothing; the
    locking path then answers by the change's outcome."""
    stores = unlocked_stores
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    await stores.jobs.enqueue_for_mailboxes(
        account.id, [mailbox.id], preparing([new_job(account.id, mailbox.id, "before")])
    )
    seen: list[dict[str, str]] = []
    refused: list[NewJob] = []

    def prepare(mailboxes: Mapping[str, Mailbox]) -> Sequence[NewJob]:
        seen.append({key: mailbox.state for key, mailbox in mailboxes.items()})
        if mailboxes[mailbox.id].state == "disconnected":
            refused.append(new_job(account.id, mailbox.id, "racing"))
            return []  # as the intake refuses a disconnected mailbox's request
        return [new_job(account.id, mailbox.id, "racing")]

    async with stores.sessions.begin() as session:
        await lock_for_state_change(session, mailbox.id)
        await session.execute(
            text("UPDATE mailboxes SET state = 'disconnected' WHERE id = :id"), {"id": mailbox.id}
        )
        enqueue = asyncio.create_task(
            stores.jobs.enqueue_for_mailboxes(account.id, [mailbox.id], prepare)
        )
        async with asyncio.timeout(30):
            await until_one_waits(stores, enqueue)  # the insert waits for the change's commit
    async with asyncio.timeout(30):
        assert await enqueue == []
    assert seen == [{mailbox.id: "connected"}, {mailbox.id: "disconnected"}]
    assert len(refused) == 1
    counts = await stores.queue.count_by_state()
    assert counts.get("queued") == 1, counts  # only the job from before


async def test_a_mailbox_needing_consent_again_since_it_was_read_holds_the_job(
    unlocked_stores: Stores,
) -> None:
    stores = unlocked_stores
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    await stores.jobs.enqueue_for_mailboxes(
        account.id, [mailbox.id], preparing([new_job(account.id, mailbox.id, "before")])
    )
    await stores.mailboxes.require_consent_again(mailbox, "invalid_grant", "test")

    def prepare(mailboxes: Mapping[str, Mailbox]) -> Sequence[NewJob]:
        held = mailboxes[mailbox.id].state == "reauth_required"
        job = new_job(account.id, mailbox.id, "after")
        return [NewJob(**{**job.__dict__, "held": held})]

    (result,) = await stores.jobs.enqueue_for_mailboxes(account.id, [mailbox.id], prepare)
    assert not isinstance(result, Conflict)
    job = await stores.jobs.get(result[0].id)
    assert job is not None and job.state == "held"


async def test_a_refusal_is_the_locking_reads_not_the_snapshots(unlocked_stores: Stores) -> None:
    """A request refused by the mailbox as last read (not connected yet) is refused only by
    the locking read, which sees the mailbox as it is now: connected in between."""
    stores = unlocked_stores
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.mailboxes.create(account.id, "microsoft", ["send"], actor="test")
    seen: list[dict[str, str]] = []

    def prepare(mailboxes: Mapping[str, Mailbox]) -> Sequence[NewJob]:
        seen.append({key: row.state for key, row in mailboxes.items()})
        ready = mailboxes.get(mailbox.id)
        return [new_job(account.id, mailbox.id, None)] if ready and ready.address else []

    assert await stores.jobs.enqueue_for_mailboxes(account.id, [mailbox.id], prepare) == []
    await stores.mailboxes.mark_connected(mailbox.id, "billing@contoso.example", ["Mail.Send"])
    seen.clear()
    (result,) = await stores.jobs.enqueue_for_mailboxes(account.id, [mailbox.id], prepare)
    assert not isinstance(result, Conflict) and result[1]
    # The snapshot (pending) refused; the locking read (connected) accepted.
    assert seen == [{mailbox.id: "pending_consent"}, {mailbox.id: "connected"}]


async def test_an_address_changed_since_it_was_read_is_read_again(
    unlocked_stores: Stores,
) -> None:
    stores = unlocked_stores
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    addresses: list[str | None] = []

    def prepare(mailboxes: Mapping[str, Mailbox]) -> Sequence[NewJob]:
        addresses.append(mailboxes[mailbox.id].address)
        return [new_job(account.id, mailbox.id, None)]

    await stores.jobs.enqueue_for_mailboxes(account.id, [mailbox.id], prepare)
    async with stores.sessions.begin() as session:
        await session.execute(
            text("UPDATE mailboxes SET address = 'ap@contoso.example' WHERE id = :id"),
            {"id": mailbox.id},
        )
    addresses.clear()
    await stores.jobs.enqueue_for_mailboxes(account.id, [mailbox.id], prepare)
    assert addresses == ["billing@contoso.example", "ap@contoso.example"]


async def test_idempotency_holds_on_the_unlocked_path(unlocked_stores: Stores) -> None:
    stores = unlocked_stores
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)

    async def enqueue(digest: str) -> tuple[Job, bool] | Conflict:
        job = new_job(account.id, mailbox.id, "key-1", digest=digest)
        (result,) = await stores.jobs.enqueue_for_mailboxes(
            account.id, [mailbox.id], preparing([job])
        )
        return result

    first = await enqueue("a")
    with statements(stores) as sent:
        again = await enqueue("a")
    # From the snapshot, then the key's first job read: the insert is not sent again.
    assert sent[0] == "WITH INPUT AS" and sent.count("WITH INPUT AS") == 1, sent
    reused = await enqueue("b")
    assert not isinstance(first, Conflict) and first[1]
    assert not isinstance(again, Conflict) and not again[1] and again[0].id == first[0].id
    assert isinstance(reused, Conflict) and reused.code == "idempotency_key_reused"


async def test_behind_a_transaction_pooler_every_enqueue_reads_under_the_lock(
    unlocked_stores: Stores,
) -> None:
    stores = unlocked_stores
    jobs = JobStore(stores.sessions, transaction_pooler=True)
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    sent: list[str] = []

    def record(*args: Any) -> None:
        sent.append(str(args[2]))

    event.listen(stores.engine.sync_engine, "before_cursor_execute", record)
    try:
        for key in ("k1", "k2"):
            await jobs.enqueue_for_mailboxes(
                account.id, [mailbox.id], preparing([new_job(account.id, mailbox.id, key)])
            )
    finally:
        event.remove(stores.engine.sync_engine, "before_cursor_execute", record)
    reads = [statement for statement in sent if statement.startswith("SELECT mailboxes")]
    assert len(reads) == 2 and all("FOR KEY SHARE" in read for read in reads), sent


async def test_an_expired_key_on_the_unlocked_path_makes_a_new_job(unlocked_stores: Stores) -> None:
    """The one-statement insert meets the old key and inserts nothing; the session that
    answers a conflicted key forgets it and inserts the job, once."""
    stores = unlocked_stores
    now = [dt.datetime.now(dt.UTC)]
    jobs = JobStore(stores.sessions, lambda: now[0], idempotency_window=dt.timedelta(hours=1))
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)

    async def enqueue() -> tuple[Job, bool] | Conflict:
        job = new_job(account.id, mailbox.id, "key-1")
        (result,) = await jobs.enqueue_for_mailboxes(account.id, [mailbox.id], preparing([job]))
        return result

    first = await enqueue()
    now[0] += dt.timedelta(hours=2)
    with statements(stores) as sent:
        second = await enqueue()
    assert not isinstance(first, Conflict) and not isinstance(second, Conflict)
    assert second[1] and second[0].id != first[0].id
    assert sent.count("WITH INPUT AS") == 3, sent  # conflicted, then conflicted, then inserted
    async with stores.sessions() as session:
        rows = (await session.execute(text("SELECT id, idempotency_key FROM jobs"))).all()
    keys = {row[0]: row[1] for row in rows}
    assert keys == {first[0].id: None, second[0].id: "key-1"}
