"""Every SQLite connection the engine opens commits durably: WAL mode with
``synchronous=FULL``, so a commit waits for the WAL to reach the disk. A job answered 202 and
an attempt's start recorded before its request leaves must outlive a power loss, not only a
crash of the process (docs/architecture.md, "One machine or many")."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from mailbox_worker.config import DatabaseSettings
from mailbox_worker.db.engine import create_engine

FULL = 2
"""``PRAGMA synchronous``'s answer for FULL (NORMAL is 1)."""


async def test_every_connection_waits_for_the_disk_at_commit(tmp_path: Path) -> None:
    engine = create_engine(DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"))
    try:

        async def settings() -> tuple[str, int]:
            async with engine.connect() as connection:
                mode = await connection.scalar(text("PRAGMA journal_mode"))
                synchronous = await connection.scalar(text("PRAGMA synchronous"))
                await asyncio.sleep(0.01)  # held, so that the others open connections of their own
                return str(mode), int(synchronous or 0)

        seen = await asyncio.gather(*(settings() for _ in range(4)))
        assert seen == [("wal", FULL)] * 4
    finally:
        await engine.dispose()
