"""The SQLite engine's statements take one trip each to aiosqlite's thread, and its
transactions none of their own to begin, nor to end when nothing ran in them
(``db/sqlite_driver.py``; docs/performance.md, "Ninth pass"). What SQLAlchemy reads back is
what ``sqlite3`` answered, errors included, and a transaction still takes SQLite's write lock
before its first statement runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from mailbox_worker.config import DatabaseSettings
from mailbox_worker.db.engine import SQLITE_BUSY_TIMEOUT_MS, create_engine

METADATA = MetaData()
ITEMS = Table(
    "items",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(20), unique=True, nullable=False),
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'd.db'}"))
    async with engine.begin() as connection:
        await connection.run_sync(METADATA.create_all)
    try:
        yield engine
    finally:
        await engine.dispose()


@contextmanager
def trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The name of each function sent to an aiosqlite connection's thread while open."""
    sent: list[str] = []
    original: Callable[..., Any] = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(aiosqlite.Connection, "_execute", counted)
        yield sent


async def warm(engine: AsyncEngine) -> None:
    """A connection opened and pooled, so that what is counted is the work, not the connect."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def test_a_transaction_is_one_trip_per_statement_and_its_commit(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await warm(engine)
    with trips(monkeypatch) as sent:
        async with engine.begin() as connection:
            await connection.execute(insert(ITEMS), {"name": "a"})
            await connection.execute(insert(ITEMS), [{"name": "b"}, {"name": "c"}])
            rows = (await connection.execute(select(ITEMS.c.name).order_by(ITEMS.c.id))).all()
    # BEGIN IMMEDIATE went with the first statement; the pool's reset after the commit found
    # no transaction and sent nothing.
    assert sent == ["_run", "_run", "_run", "commit"]
    assert [row.name for row in rows] == ["a", "b", "c"]


async def test_a_transaction_in_which_nothing_ran_costs_no_trip(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await warm(engine)
    with trips(monkeypatch) as sent:
        async with engine.begin():
            pass
        async with engine.connect() as connection:
            await connection.begin()
            await connection.rollback()
    assert sent == []


async def test_the_write_lock_is_taken_by_the_first_statement(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """Another writer waits (here: fails at once, no busy timeout) from the transaction's
    first statement on, a read included, as with ``BEGIN IMMEDIATE`` sent on its own."""
    async with engine.begin() as connection:
        await connection.execute(select(ITEMS.c.id))
        async with aiosqlite.connect(tmp_path / "d.db", isolation_level=None) as other:
            await other.execute("PRAGMA busy_timeout=0")
            with pytest.raises(aiosqlite.OperationalError, match="locked"):
                await other.execute("BEGIN IMMEDIATE")


async def test_a_busy_database_fails_the_first_statement_and_leaves_no_transaction(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    async with aiosqlite.connect(tmp_path / "d.db", isolation_level=None) as other:
        await other.execute("BEGIN IMMEDIATE")
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver: aiosqlite.Connection = raw.driver_connection  # type: ignore[assignment]
            await driver.execute("PRAGMA busy_timeout=0")  # outside any transaction
            with pytest.raises(OperationalError, match="locked"):
                async with connection.begin():
                    await connection.execute(insert(ITEMS), {"name": "x"})
            assert not driver._conn.in_transaction
            await driver.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        await other.execute("ROLLBACK")
    async with engine.begin() as connection:  # the engine goes on
        await connection.execute(insert(ITEMS), {"name": "x"})
        assert await connection.scalar(select(ITEMS.c.name)) == "x"


async def test_what_sqlalchemy_reads_back_is_what_sqlite_answered(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        first = await connection.execute(insert(ITEMS), {"name": "a"})
        assert first.inserted_primary_key == (1,)  # the cursor's lastrowid
        returned = await connection.execute(
            insert(ITEMS).returning(ITEMS.c.id, ITEMS.c.name), {"name": "b"}
        )
        assert returned.all() == [(2, "b")]
        many = await connection.execute(insert(ITEMS), [{"name": "c"}, {"name": "d"}])
        assert many.rowcount == 2
        changed = await connection.execute(
            update(ITEMS).where(ITEMS.c.name.in_(["a", "b", "c"])).values(name=ITEMS.c.name + "!")
        )
        assert changed.rowcount == 3
        nothing = await connection.execute(select(ITEMS).where(ITEMS.c.id > 100))
        assert nothing.all() == []
        assert list(nothing.keys()) == ["id", "name"]  # the description, with no row


async def test_a_failed_statement_raises_and_its_transaction_rolls_back(
    engine: AsyncEngine,
) -> None:
    async def insert_twice() -> None:
        async with engine.begin() as connection:
            await connection.execute(insert(ITEMS), {"name": "kept?"})
            await connection.execute(insert(ITEMS), {"name": "kept?"})

    with pytest.raises(IntegrityError):
        await insert_twice()
    async with engine.connect() as connection:
        assert (await connection.execute(select(ITEMS))).all() == []


async def test_an_autocommit_connection_begins_no_transaction(engine: AsyncEngine) -> None:
    """A WAL checkpoint cannot run inside a transaction (``db/engine.py``)."""
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        busy, _, _ = (await autocommit.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))).one()
        assert busy == 0


async def test_a_cancelled_statement_does_not_leave_its_transaction_open(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """The trip carrying ``BEGIN IMMEDIATE`` goes on in aiosqlite's thread after its caller
    is cancelled; the transaction still ends behind it (what ends it is queued after the trip,
    which counts as having begun it: ``OneTripConnection.take_begin``), so the write lock is
    let go and the engine goes on."""
    slow = text(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) "
        "SELECT count(*) FROM c"
    )

    async def long_transaction() -> None:
        async with engine.begin() as connection:
            await connection.execute(slow)

    task = asyncio.create_task(long_transaction())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with aiosqlite.connect(tmp_path / "d.db", isolation_level=None) as other:
        await other.execute("PRAGMA busy_timeout=10000")
        await other.execute("BEGIN IMMEDIATE")  # the write lock, once the slow trip is done
        await other.execute("ROLLBACK")
    async with engine.begin() as connection:
        await connection.execute(insert(ITEMS), {"name": "after"})
    async with engine.connect() as connection:
        assert await connection.scalar(select(ITEMS.c.name)) == "after"


async def test_a_streamed_first_statement_still_begins_the_transaction(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """A server-side cursor (``stream()``) runs on SQLAlchemy's own cursor class, not in one
    trip; the transaction's ``BEGIN IMMEDIATE`` goes before it all the same."""
    async with engine.begin() as connection:
        await connection.execute(insert(ITEMS), [{"name": "a"}, {"name": "b"}])
    async with engine.begin() as connection:
        streamed = await connection.stream(select(ITEMS.c.name).order_by(ITEMS.c.id))
        assert [row.name async for row in streamed] == ["a", "b"]
        async with aiosqlite.connect(tmp_path / "d.db", isolation_level=None) as other:
            await other.execute("PRAGMA busy_timeout=0")
            with pytest.raises(aiosqlite.OperationalError, match="locked"):
                await other.execute("BEGIN IMMEDIATE")
