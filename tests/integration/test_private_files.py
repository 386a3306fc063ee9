"""Files the daemon and the sandbox create that hold tokens or keys are private to their user.

The SQLite database and its ``-wal`` and ``-shm`` files are created 0600 in a folder created
0700 (the process umask is left alone); the sandbox's folder is 0700 and its private keys 0600.
"""

from __future__ import annotations

import stat
from pathlib import Path

from mailbox_worker.config import DatabaseSettings
from mailbox_worker.db import migrate
from mailbox_worker.db.accounts import AccountStore
from mailbox_worker.db.engine import create_engine, create_session_factory
from mailbox_worker.sandbox import Sandbox


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_sqlite_database_and_its_wal_and_shm_are_private(tmp_path: Path) -> None:
    folder = tmp_path / "var" / "data"
    database = folder / "mailbox-worker.db"
    engine = create_engine(DatabaseSettings(url=f"sqlite+aiosqlite:///{database}"))
    try:
        await migrate.upgrade(engine)
        await AccountStore(create_session_factory(engine)).create_account("acme")
        files = [database, folder / "mailbox-worker.db-wal", folder / "mailbox-worker.db-shm"]
        assert {path.name: mode(path) for path in files} == {path.name: 0o600 for path in files}
        assert mode(folder) == 0o700
    finally:
        await engine.dispose()


async def test_an_existing_database_file_keeps_its_mode(tmp_path: Path) -> None:
    database = tmp_path / "shared.db"
    database.touch(mode=0o640)
    database.chmod(0o640)
    engine = create_engine(DatabaseSettings(url=f"sqlite+aiosqlite:///{database}"))
    try:
        await migrate.upgrade(engine)
        assert mode(database) == 0o640
    finally:
        await engine.dispose()


async def test_the_sandbox_keeps_its_private_keys_private(tmp_path: Path) -> None:
    folder = tmp_path / "sandbox"
    sandbox = Sandbox(folder)
    await sandbox.start()
    await sandbox.stop()
    assert mode(folder) == 0o700
    keys = sorted(path.name for path in folder.iterdir() if "key" in path.name)
    assert keys, "the sandbox wrote no private key"
    assert {name: mode(folder / name) for name in keys} == dict.fromkeys(keys, 384)
