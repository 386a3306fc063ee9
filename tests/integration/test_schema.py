"""The migrated schema is exactly the models, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from mailbox_worker.db import migrate
from mailbox_worker.db.models import Base


async def test_migrations_produce_the_models(engine: AsyncEngine) -> None:
    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as connection:
        assert await connection.run_sync(differences) == []


async def test_migrations_are_current_and_idempotent(engine: AsyncEngine) -> None:
    assert not await migrate.pending(engine)
    await migrate.upgrade(engine)  # a second run changes nothing and does not fail
    assert not await migrate.pending(engine)
