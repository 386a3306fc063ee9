"""Wake-ups (jobs/wakeups.py) on a real database: on PostgreSQL an enqueue's commit, and only
its commit, wakes a listening process, and the listener comes back after its connection is
killed (when the idle worker's next due job is, the claim says: test_mailbox_limits.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from mailbox_worker.jobs.wakeups import CHANNEL, DueListener, announce_in, listen_dsn

from .conftest import Stores
from .test_queue import new_job, setup


class Wakes:
    """Counts ``on_due`` calls and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.count = 0
        self._event = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self._event.set()

    async def next(self) -> None:
        async with asyncio.timeout(30):
            await self._event.wait()
        self._event.clear()


@pytest.fixture
async def listening(stores: Stores) -> AsyncIterator[tuple[DueListener, Wakes]]:
    dsn = listen_dsn(stores.engine.url.render_as_string(hide_password=False))
    if dsn is None:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    wakes = Wakes()
    # Listening as another process would: this one's own notifications are ignored.
    listener = DueListener(dsn, wakes, own_origin="elsewhere:1")
    stop = asyncio.Event()
    running = asyncio.create_task(listener.run(stop))
    await wakes.next()  # called once as it starts listening
    yield listener, wakes
    stop.set()
    async with asyncio.timeout(30):
        await running


async def test_an_enqueue_wakes_the_listener_on_commit(
    stores: Stores, listening: tuple[DueListener, Wakes]
) -> None:
    listener, wakes = listening
    assert listener.listening
    mailbox = await setup(stores)
    await stores.jobs.enqueue(new_job(mailbox))
    await wakes.next()


async def test_a_rolled_back_transaction_wakes_no_one(
    stores: Stores, listening: tuple[DueListener, Wakes]
) -> None:
    _, wakes = listening
    count = wakes.count
    async with stores.sessions() as session:
        await session.begin()
        await announce_in(session)
        await session.rollback()
    # A notification sent after the rolled-back one arrives alone: the first never left.
    async with stores.sessions.begin() as session:
        await session.execute(text("SELECT pg_notify(:channel, 'second')"), {"channel": CHANNEL})
    await wakes.next()
    assert wakes.count == count + 1


async def test_the_listener_comes_back_after_its_connection_is_killed(
    stores: Stores, listening: tuple[DueListener, Wakes]
) -> None:
    listener, wakes = listening
    async with stores.engine.begin() as connection:
        killed = await connection.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
            )
        )
    assert killed == 1
    await wakes.next()  # listening again: called once more, for what it may have missed
    assert listener.listening
    mailbox = await setup(stores)
    await stores.jobs.enqueue(new_job(mailbox))
    await wakes.next()
