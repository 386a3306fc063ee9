"""Engine and session factory for SQLite (embedded, default) and PostgreSQL.

SQLite runs in WAL mode with foreign keys on, and every transaction starts with
``BEGIN IMMEDIATE`` so that concurrent writers queue on the busy timeout instead of failing
with "database is locked" when a read transaction later tries to write.

PostgreSQL behind a pooler in transaction mode (PgBouncer's ``pool_mode = transaction``) hands
each transaction whichever server connection is free, so statements asyncpg prepared on one
are unknown on the next (``prepared statement … does not exist``) or collide by name (``…
already exists``). With ``database.transaction_pooler = true`` the engine keeps no statement
cache and names each prepared statement uniquely, as SQLAlchemy's asyncpg dialect documents for
PgBouncer (docs/architecture.md#one-machine-or-many).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from mailbox_worker.db.sqlite_driver import one_trip_dbapi


@dataclass(frozen=True)
class DatabaseSettings:
    """The ``[database]`` settings section (see ``config/mailbox-worker.toml``)."""

    url: str = "sqlite+aiosqlite:///var/mailbox-worker.db"
    pool_size: int = 20
    max_overflow: int = 0
    """Connections opened beyond ``pool_size`` when all are busy, closed when returned
    (SQLAlchemy's behaviour); the pool holds at most ``pool_size + max_overflow``. None by
    default: under bursts of short statements, overflow connections were closed as soon as
    returned and opened again at the next burst, each paying its connection, authentication
    and statement preparation (docs/performance.md, "Fifth pass")."""
    echo: bool = False
    transaction_pooler: bool = False
    """PostgreSQL is reached through a transaction-mode pooler such as PgBouncer."""


SQLITE_BUSY_TIMEOUT_MS = 30_000


def create_engine(settings: DatabaseSettings) -> AsyncEngine:
    """An engine for ``settings.url``; creates the SQLite file's folder when needed."""
    url = make_url(settings.url)
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database and database != ":memory:":
            create_private_file(Path(database).expanduser())
        engine = create_async_engine(url, echo=settings.echo, module=one_trip_dbapi())
        _configure_sqlite(engine)
        return engine
    return create_async_engine(
        url,
        echo=settings.echo,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        # No ping at each checkout (a round-trip before every unit of work): a connection the
        # database dropped fails on its first use instead, SQLAlchemy then discards every
        # pooled connection opened before it, and the unit of work is retried
        # (``JobQueue._retrying``) or answered as an outage (``db/outage.py``).
        pool_pre_ping=False,
        connect_args=postgresql_connect_args(settings),
    )


def postgresql_connect_args(settings: DatabaseSettings) -> dict[str, Any]:
    """asyncpg connection arguments: no statement caches and unique statement names behind a
    transaction pooler, asyncpg's defaults otherwise."""
    if not settings.transaction_pooler:
        return {}
    return {
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": _unique_statement_name,
    }


def _unique_statement_name() -> str:
    return f"__mw_{uuid.uuid4().hex}__"


def create_private_file(path: Path) -> None:
    """Create the SQLite file empty, mode 0600, in a folder created 0700, unless it exists.

    SQLite would create it 0644 (under the usual umask), and its unix VFS gives the ``-wal``
    and ``-shm`` files the main file's mode, so creating the main file first makes all three
    private without touching the process umask. An existing file keeps its mode.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(descriptor)


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, below, decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Deleted rows are overwritten with zeros, not left in free space (docs/erasure.md).
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # Each commit waits for the WAL to reach the disk, as PostgreSQL's does: a job answered
        # 202, and an attempt's start recorded before its request leaves, outlive a power loss
        # or an operating system crash (NORMAL keeps them only across a crash of the process).
        # About 0.2 ms per commit on the reference machine (docs/performance.md, "Eighth pass").
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Any) -> None:
        if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            return  # no transaction at all: a WAL checkpoint cannot run inside one
        # Sent with the transaction's first statement, in its trip to aiosqlite's thread
        # (``db/sqlite_driver.py``).
        connection.connection.dbapi_connection.begin_immediate()


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def is_postgresql(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"
