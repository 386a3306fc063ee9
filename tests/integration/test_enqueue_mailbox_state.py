"""``JobStore.enqueue_reading_mailboxes`` reads each mailbox's state in the jobs' transaction,
after their insert, and that state is still the mailbox's when the jobs commit: a state
change (``MailboxStore.set_state``, ``mark_connected``) waits for the enqueue, while a claim
does not. This is what lets the intake settle a consent or disconnect race without reading
the mailbox again after the commit (``JobIntake._settle_race``)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from sqlalchemy import text

from mailbox_worker.db.models import Mailbox
from mailbox_worker.errors import Conflict
from mailbox_worker.jobs import store as store_module

from .conftest import Stores
from .test_enqueue_many import new_job, statements


async def test_the_states_are_read_in_the_transaction_once_per_mailbox(stores: Stores) -> None:
    account = await stores.accounts.create_account("acme")
    first = await stores.connected_mailbox(account.id)
    second = await stores.connected_mailbox(account.id)
    await stores.mailboxes.require_consent_again(second, "invalid_grant", "test")
    await stores.jobs.enqueue(new_job(account.id, first.id, "warm"))  # caches, connections

    with statements(stores) as sent:
        enqueued = await stores.jobs.enqueue_reading_mailboxes(
            [new_job(account.id, mailbox.id, None) for mailbox in (first, second, first)]
        )

    assert all(not isinstance(result, Conflict) and result[1] for result in enqueued.results)
    assert enqueued.mailbox_states == {first.id: "connected", second.id: "reauth_required"}
    if stores.engine.dialect.name == "postgresql":
        # With the content and event inserts, in one statement (jobs/enqueue_sql.py).
        reads = [kind for kind in sent if kind.startswith("WITH INPUT AS")]
        assert len(reads) == 1, sent
    else:
        reads = [kind for kind in sent if kind.startswith("SELECT MAILBOXES")]
        assert reads == ["SELECT MAILBOXES.ID, MAILBOXES.STATE"], sent
    assert sent.index(reads[0]) > sent.index("INSERT INTO JOBS"), sent  # after the insert

    replayed = await stores.jobs.enqueue_reading_mailboxes([new_job(account.id, first.id, "warm")])
    assert replayed.mailbox_states == {}  # no new job: nothing to settle, nothing read


@pytest.fixture
def postgres_stores(stores: Stores) -> Stores:
    if stores.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's single writer serialises enqueues and state changes already")
    return stores


def pausing_after_the_read(read: asyncio.Event, commit: asyncio.Event) -> Any:
    """The store's PostgreSQL companion statement (which reads the mailboxes' states), then
    ``read`` set and a wait for ``commit``: the transaction stays open, the jobs inserted and
    not committed."""
    original = store_module._add_companions_postgresql

    async def paused(*args: Any, **kwargs: Any) -> dict[str, str]:
        states = await original(*args, **kwargs)
        read.set()
        await commit.wait()
        return states

    return paused


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


async def test_a_state_change_waits_for_an_enqueue_and_a_claim_does_not(
    postgres_stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    stores = postgres_stores
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    waiting, _ = await stores.jobs.enqueue(new_job(account.id, mailbox.id, "already queued"))
    read = asyncio.Event()
    commit = asyncio.Event()
    monkeypatch.setattr(
        store_module, "_add_companions_postgresql", pausing_after_the_read(read, commit)
    )
    enqueue = asyncio.create_task(
        stores.jobs.enqueue_reading_mailboxes([new_job(account.id, mailbox.id, "racing")])
    )
    async with asyncio.timeout(30):
        await read.wait()
        # A claim meanwhile takes the mailbox's other job: it neither waits nor skips it.
        claimed = await stores.queue.claim("w", 10, dt.timedelta(minutes=1))
        assert [item.job.id for item in claimed] == [waiting.id]
        disconnect = asyncio.create_task(
            stores.mailboxes.set_state(
                mailbox.id, "disconnected", "disconnected_by_admin", expected=["connected"]
            )
        )
        while not await waiting_for_a_lock(stores):
            assert not disconnect.done()
            await asyncio.sleep(0.01)
        assert not disconnect.done()  # it waits for the enqueue's commit
        commit.set()
        enqueued = await enqueue
        assert await disconnect
    assert enqueued.mailbox_states == {mailbox.id: "connected"}
    (result,) = enqueued.results
    assert not isinstance(result, Conflict)
    # The disconnect committed after the job did: its sweep, run after its state change as
    # MailboxService.disconnect_mailbox runs it, sees the job.
    cancelled = await stores.jobs.cancel_pending_for_mailbox(mailbox.id, "mailbox_disconnected", "")
    assert cancelled == 1
    job = await stores.jobs.get(result[0].id)
    assert job is not None and job.state == "cancelled"


async def test_a_consent_waits_for_an_enqueue_too(
    postgres_stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    stores = postgres_stores
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    await stores.mailboxes.require_consent_again(mailbox, "invalid_grant", "test")
    read = asyncio.Event()
    commit = asyncio.Event()
    monkeypatch.setattr(
        store_module, "_add_companions_postgresql", pausing_after_the_read(read, commit)
    )
    held: Any = new_job(account.id, mailbox.id, "held")
    held = type(held)(**{**held.__dict__, "held": True})
    enqueue = asyncio.create_task(stores.jobs.enqueue_reading_mailboxes([held]))
    async with asyncio.timeout(30):
        await read.wait()
        consent = asyncio.create_task(
            stores.mailboxes.mark_connected(mailbox.id, "billing@contoso.example", ["Mail.Send"])
        )
        while not await waiting_for_a_lock(stores):
            assert not consent.done()
            await asyncio.sleep(0.01)
        assert not consent.done()
        commit.set()
        enqueued = await enqueue
        assert await consent
    assert enqueued.mailbox_states == {mailbox.id: "reauth_required"}
    assert await stores.jobs.release_held(mailbox.id) == 1  # the consent's sweep sees it
    row = await stores.mailboxes.get(mailbox.id)
    assert isinstance(row, Mailbox) and row.state == "connected"
