"""Outbox events and pending revocations are leased: one process at a time handles a row.

"Another process" is a second engine on the same database (its own connections, its own
lease owner); every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailbox_worker.config import CallbackSettings, DatabaseSettings
from mailbox_worker.db.accounts import AccountStore
from mailbox_worker.db.engine import create_engine, create_session_factory
from mailbox_worker.db.erasure import StorageScrubber
from mailbox_worker.events.delivery import CallbackDispatcher
from mailbox_worker.events.outbox import Outbox
from mailbox_worker.mailboxes.revocations import Revocations
from mailbox_worker.tokens.keys.file_source import FileKeySource
from mailbox_worker.tokens.vault import TokenVault

from .conftest import Stores
from .test_revocations import FlakyRevoker

LEASE = dt.timedelta(minutes=5)
EXPIRED = dt.timedelta(seconds=-1)


@pytest.fixture
async def other_sessions(
    migrated_database_url: str,
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions of a second process on the test database."""
    engine = create_engine(DatabaseSettings(url=migrated_database_url))
    yield create_session_factory(engine)
    await engine.dispose()


async def test_two_outboxes_never_claim_the_same_event(
    stores: Stores, other_sessions: async_sessionmaker[AsyncSession]
) -> None:
    first, second = Outbox(stores.sessions), Outbox(other_sessions)
    for number in range(6):
        await first.add("acc_1", "job.sent", {"n": number})
    claims = await asyncio.gather(first.claim(4, LEASE), second.claim(4, LEASE))
    ids = [[event.id for event in claimed] for claimed in claims]
    assert sorted(len(claimed) for claimed in ids) == [2, 4]
    assert set(ids[0]).isdisjoint(ids[1])
    assert set(ids[0]) | set(ids[1]) == {event.id for event in await first.all()}
    assert await first.claim(10, LEASE) == []  # every event is leased
    assert await second.claim(10, LEASE) == []


async def test_an_expired_outbox_lease_is_claimed_again(
    stores: Stores, other_sessions: async_sessionmaker[AsyncSession]
) -> None:
    dead, alive = Outbox(stores.sessions), Outbox(other_sessions)
    await dead.add("acc_1", "job.sent", {"n": 1})
    [taken] = await dead.claim(10, EXPIRED)
    [again] = await alive.claim(10, LEASE)
    assert again.id == taken.id
    assert again.lease_owner == alive.owner
    # The process that lost the lease cannot release (and so reschedule) the event.
    assert await dead.retry_later(taken.id, 1, dt.timedelta(seconds=1)) is False
    assert await alive.retry_later(again.id, 1, dt.timedelta(seconds=-1)) is True
    [released] = await dead.claim(10, LEASE)  # released and due: anybody may take it
    assert released.attempts == 1


class CountingApp:
    def __init__(self) -> None:
        self.received: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(json.loads(await request.read())["id"])
        await asyncio.sleep(0.01)  # so that both daemons are busy at once
        return web.Response(status=204)


async def test_two_delivery_loops_post_each_event_once(
    stores: Stores, other_sessions: async_sessionmaker[AsyncSession]
) -> None:
    app = CountingApp()
    application = web.Application()
    application.router.add_post("/events", app.handle)
    server = TestServer(application, host="127.0.0.1")
    await server.start_server()
    try:
        settings = CallbackSettings(url=str(server.make_url("/events")), secret="s")
        outboxes = [Outbox(stores.sessions), Outbox(other_sessions)]
        for number in range(120):  # more than one batch each
            await outboxes[0].add("acc_1", "job.sent", {"n": number})
        dispatchers = [CallbackDispatcher(outbox, settings) for outbox in outboxes]
        delivered = 0
        for _ in range(5):
            delivered += sum(await asyncio.gather(*(d.deliver_due() for d in dispatchers)))
    finally:
        await server.close()
    events = await outboxes[0].all()
    assert delivered == 120
    assert all(event.delivered_at is not None for event in events)
    assert Counter(app.received) == Counter({event.public_id: 1 for event in events})


async def deferred_revocations(
    stores: Stores, tmp_path: Path, other_sessions: async_sessionmaker[AsyncSession], count: int
) -> tuple[Revocations, Revocations, FlakyRevoker, str]:
    """Two processes' ``Revocations`` sharing one identity fake, with ``count`` revocations
    deferred (the provider was down at disconnect)."""
    keys = FileKeySource(tmp_path / "keys.json", create_if_missing=True)
    revoker = FlakyRevoker(failures=count)
    processes = []
    for sessions in (stores.sessions, other_sessions):
        scrubber = StorageScrubber(stores.engine)
        vault = TokenVault(sessions, keys, scrubber)
        processes.append(
            Revocations(sessions, vault, {"google": revoker}, AccountStore(sessions), scrubber)
        )
    account = await stores.accounts.create_account("acme")
    for number in range(count):
        mailbox = await stores.mailboxes.create(account.id, "google", ["send"], actor="t")
        assert await processes[0].revoke(mailbox, f"token-{number}") == "pending"
    return processes[0], processes[1], revoker, account.id


async def test_two_revocation_loops_revoke_each_token_once(
    stores: Stores, tmp_path: Path, other_sessions: async_sessionmaker[AsyncSession]
) -> None:
    first, second, revoker, account_id = await deferred_revocations(
        stores, tmp_path, other_sessions, count=5
    )
    settled = 0
    for _ in range(2):
        rounds = await asyncio.gather(
            first.retry_due(everything=True), second.retry_due(everything=True)
        )
        settled += sum(rounds)
    assert settled == 5
    assert sorted(revoker.revoked) == [f"token-{number}" for number in range(5)]
    assert await first.pending() == []
    events = await stores.accounts.audit_events(account_id)
    assert len([e for e in events if e.action == "mailbox.revocation"]) == 5


async def test_a_leased_revocation_waits_for_its_lease_to_expire(
    stores: Stores, tmp_path: Path, other_sessions: async_sessionmaker[AsyncSession]
) -> None:
    first, second, revoker, _ = await deferred_revocations(
        stores, tmp_path, other_sessions, count=1
    )
    [held] = await first.claim(10, LEASE, everything=True)
    assert await second.retry_due(everything=True) == 0  # leased to the first process
    assert revoker.revoked == []
    async with stores.sessions.begin() as session:  # the first process died; time passed
        row = await session.get(type(held), held.id)
        assert row is not None
        row.lease_expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    assert await second.retry_due(everything=True) == 1
    assert revoker.revoked == ["token-0"]
