"""Wake-ups (jobs/wakeups.py) on a real database: on PostgreSQL an enqueue's commit, and only
its commit, wakes a listening process (so do a release of held jobs and a retry), and the
listener comes back after its connection is killed (when the idle worker's next due job
is, the claim says: test_mailbox_limits.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from mailbox_worker.jobs.store import NewJob
from mailbox_worker.jobs.transitions import RETRY
from mailbox_worker.jobs.wakeups import CHANNEL, DueListener, announce_in, listen_dsn

from .conftest import Stores
from .test_queue import new_job, setup
from .test_queue_settlement import unknown_job


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


async def test_an_enqueue_that_inserts_nothing_wakes_no_one(
    stores: Stores, listening: tuple[DueListener, Wakes]
) -> None:
    """Its jobs' statement sends the ``NOTIFY`` only once it inserted one (jobs/enqueue_sql.py):
    a replay of an ``Idempotency-Key`` inserts none. A batch of jobs sends one."""
    _, wakes = listening
    mailbox = await setup(stores)
    before = await quiet(wakes)
    await stores.jobs.enqueue_many(
        [new_job(mailbox, key=f"k{n}", subject=f"s{n}") for n in range(3)]
    )
    await counted(wakes, before + 1)

    before = await quiet(wakes)
    _, created = await stores.jobs.enqueue(new_job(mailbox, key="k1", subject="s1"))
    assert not created
    async with stores.sessions.begin() as session:  # a marker, sent after it would have been
        await session.execute(text("SELECT pg_notify(:channel, 'marker')"), {"channel": CHANNEL})
    await counted(wakes, before + 1)
    assert await quiet(wakes) == before + 1


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
                # This test's database only: the server is shared, and the end-to-end tests'
                # daemons listen on it at the same time (scripts/run-tests).
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid() "
                "AND datname = current_database()"
            )
        )
    assert killed == 1
    await wakes.next()  # listening again: called once more, for what it may have missed
    assert listener.listening
    mailbox = await setup(stores)
    await stores.jobs.enqueue(new_job(mailbox))
    await wakes.next()


async def test_jobs_made_due_again_wake_the_listener_on_commit(
    stores: Stores, listening: tuple[DueListener, Wakes]
) -> None:
    """Not only an enqueue: held jobs released by a reconnect and an ``unknown`` job queued
    again by a retry are announced too, so a worker that took every due job may let a free
    slot wait (docs/architecture.md#mailbox-limits)."""
    _, wakes = listening
    job = await unknown_job(stores, subject="unknown")
    mailbox = await setup(stores)
    held = new_job(mailbox, subject="held")
    await stores.jobs.enqueue(NewJob(**{**held.__dict__, "held": True}))

    before = await quiet(wakes)
    assert await stores.jobs.settle_unknown(job.id, RETRY, "cli") is not None
    await counted(wakes, before + 1)  # the retry's: nothing else was pending

    before = await quiet(wakes)
    assert await stores.jobs.release_held(mailbox.id) == 1
    await counted(wakes, before + 1)

    before = await quiet(wakes)
    assert await stores.jobs.release_held(mailbox.id) == 0  # nothing released: no wake-up
    async with stores.sessions.begin() as session:  # a marker, sent after it would have been
        await session.execute(text("SELECT pg_notify(:channel, 'marker')"), {"channel": CHANNEL})
    await counted(wakes, before + 1)
    assert await quiet(wakes) == before + 1


async def quiet(wakes: Wakes) -> int:
    """The wake-ups counted once none has arrived for a while (none is pending)."""
    while True:
        count = wakes.count
        await asyncio.sleep(0.2)
        if wakes.count == count:
            return count


async def counted(wakes: Wakes, count: int) -> None:
    async with asyncio.timeout(30):
        while wakes.count < count:
            await asyncio.sleep(0.01)
