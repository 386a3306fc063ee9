"""The cross-process lock really excludes across connections on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from mailbox_worker.config import DatabaseSettings
from mailbox_worker.db.engine import create_engine
from mailbox_worker.db.locks import DatabaseLocks

from ..conftest import create_postgres_database, drop_postgres_database, require_postgres


@pytest.fixture
async def two_postgres_engines() -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    require_postgres()
    url = await create_postgres_database()
    first = create_engine(DatabaseSettings(url=url))
    second = create_engine(DatabaseSettings(url=url))  # as if another process
    yield first, second
    await first.dispose()
    await second.dispose()
    await drop_postgres_database(url)


@pytest.mark.postgres
async def test_holders_on_separate_engines_never_overlap(
    two_postgres_engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    timeline: list[str] = []

    async def critical(locks: DatabaseLocks, name: str) -> None:
        async with locks.hold("token-refresh:mbx_1"):
            timeline.append(f"{name} in")
            await asyncio.sleep(0.05)
            timeline.append(f"{name} out")

    engines = two_postgres_engines
    await asyncio.gather(*(critical(DatabaseLocks(engines[n % 2]), f"t{n}") for n in range(6)))
    for index in range(0, len(timeline), 2):
        entered, left = timeline[index], timeline[index + 1]
        assert entered.split()[0] == left.split()[0]
        assert (entered.endswith("in"), left.endswith("out")) == (True, True)


@pytest.mark.postgres
async def test_different_keys_do_not_block_each_other(
    two_postgres_engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    first, second = (DatabaseLocks(engine) for engine in two_postgres_engines)
    async with first.hold("token-refresh:mbx_a"):
        async with asyncio.timeout(5):
            async with second.hold("token-refresh:mbx_b"):
                pass
