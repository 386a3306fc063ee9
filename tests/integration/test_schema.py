"""The migrated schema is exactly the models, on both databases, starting from empty."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from mailbox_worker.config import DatabaseSettings
from mailbox_worker.db import migrate
from mailbox_worker.db.engine import create_engine
from mailbox_worker.db.models import Base


@pytest.fixture
async def empty_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseSettings(url=database_url))
    yield engine
    await engine.dispose()


async def test_migrations_produce_the_models(empty_engine: AsyncEngine) -> None:
    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    assert await migrate.pending(empty_engine)
    await migrate.upgrade(empty_engine)
    async with empty_engine.connect() as connection:
        assert await connection.run_sync(differences) == []


async def test_migrations_are_current_and_idempotent(empty_engine: AsyncEngine) -> None:
    await migrate.upgrade(empty_engine)
    assert not await migrate.pending(empty_engine)
    await migrate.upgrade(empty_engine)  # a second run changes nothing and does not fail
    assert not await migrate.pending(empty_engine)
