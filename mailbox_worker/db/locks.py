"""Cross-process mutual exclusion for short critical sections (e.g. one token refresh at a time).

On PostgreSQL, ``hold(key)`` takes a transaction-scoped advisory lock
(``pg_advisory_xact_lock``) on a dedicated connection, so every worker process on every host
waits for the holder. SQLite is one process by design; there the caller's in-process lock
is all that is needed and ``hold`` only yields.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


class DatabaseLocks:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._shared = engine.dialect.name == "postgresql"

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the lock named ``key`` for the duration of the block."""
        if not self._shared:
            yield
            return
        async with self._engine.begin() as connection:
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key}
            )
            yield
