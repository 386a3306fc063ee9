"""Cross-process mutual exclusion for short critical sections (e.g. one token refresh at a time).

On PostgreSQL, ``hold(key)`` takes a transaction-scoped advisory lock
(``pg_advisory_xact_lock``) on a dedicated connection, so every worker process on every host
waits for the holder. ``hold_connection(key)`` also yields that connection, so the critical
section can read and write on it (committing with the lock's transaction) instead of waiting
for a second pooled connection while it pins one. SQLite is one process by design; there the
caller's in-process lock is all that is needed and the lock only yields (None).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class DatabaseLocks:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._shared = engine.dialect.name == "postgresql"

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the lock named ``key`` for the duration of the block."""
        async with self.hold_connection(key):
            yield

    @contextlib.asynccontextmanager
    async def hold_connection(self, key: str) -> AsyncIterator[AsyncConnection | None]:
        """Hold the lock named ``key`` for the block; yields the connection that holds it.

        None on SQLite. On PostgreSQL the lock's transaction commits when the block ends
        normally and rolls back when it raises, with whatever the block wrote on it.
        """
        if not self._shared:
            yield None
            return
        async with self._engine.begin() as connection:
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key}
            )
            yield connection
