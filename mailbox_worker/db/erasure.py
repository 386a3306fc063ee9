"""Scrubbing freed storage after an erasure, so that deleted token material is gone for good.

Deleting a row does not destroy its bytes. SQLite leaves them in the page's free space and in
older page images of the ``-wal`` file; PostgreSQL leaves the dead tuple, and its TOAST
chunks, in the page until the relation is rewritten (plain ``VACUUM`` marks the space free
but does not zero it). ``StorageScrubber.after_erasure`` is called once an erasure of token
material has committed, and makes the live database hold no copy of it:

- **SQLite**: every connection runs with ``secure_delete=ON`` (``engine.py``), so freed cells
  and pages are zeroed as they are freed; the scrub then checkpoints the WAL into the main
  file and truncates it (``PRAGMA wal_checkpoint(TRUNCATE)``), retrying while a reader or a
  writer keeps it busy.
- **PostgreSQL**: waits until no transaction or snapshot that began before the erasure is
  left (while one is, ``VACUUM FULL`` copies the erased rows as "recently dead"; a running
  transaction in any database of the cluster counts, since it holds back the xmin of the
  rewrite's own snapshot), rewrites the token tables and their TOAST tables with
  ``VACUUM FULL`` under a short ``lock_timeout``, checks that each table really got a new
  file, and that no old snapshot appeared meanwhile. Its queries run in transactions of their
  own and ``VACUUM`` as one simple-protocol message, so behind a transaction-mode pooler each
  lands whole on one server connection; there, ``SET lock_timeout`` would stay behind on a
  server connection other clients then use (the token refresh's advisory lock wait would give
  up after 200 ms), so ``VACUUM (FULL, SKIP_LOCKED)`` stands in for it.

A scrub that cannot finish now stays pending: ``run`` retries it in the background, and the
daemon scrubs once at start, since a pending scrub lives only in memory. Nothing here raises
for a database that is busy or down; it logs and keeps the scrub pending. See docs/erasure.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailbox_worker.db.engine import SQLITE_BUSY_TIMEOUT_MS
from mailbox_worker.db.outage import is_database_unavailable
from mailbox_worker.periodic import Periodic
from mailbox_worker.telemetry import Telemetry

log = logging.getLogger(__name__)

TOKEN_TABLES = ("token_records", "mailbox_keys", "oauth_states", "pending_revocations")

# -- SQLite ------------------------------------------------------------------------------------

# Copy every WAL frame into the main file, then truncate the WAL to zero bytes.
# Answers (busy, wal_frames, checkpointed_frames); busy=1 means it could not finish.
SQLITE_CHECKPOINT = "PRAGMA wal_checkpoint(TRUNCATE)"

# -- PostgreSQL --------------------------------------------------------------------------------

# Above every transaction id that has ended, so above the erasure that asked for the scrub.
PG_CUTOFF = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text"

# How many transactions or snapshots older than :cutoff still hold back the removal horizon
# of this database. A transaction running in any database counts: the rewrite's own
# snapshot starts at the oldest running transaction id of the whole cluster. Snapshots
# count in this database, in standbys' feedback (walsenders) and in replication slots.
PG_OLDER_SNAPSHOTS = """
SELECT count(*) FROM (
    SELECT backend_xid AS xid FROM pg_stat_activity WHERE pid <> pg_backend_pid()
    UNION ALL
    SELECT backend_xmin FROM pg_stat_activity
     WHERE pid <> pg_backend_pid()
       AND (datname = current_database() OR backend_type = 'walsender')
    UNION ALL
    SELECT xmin FROM pg_replication_slots
    UNION ALL
    SELECT transaction FROM pg_prepared_xacts
) AS held
WHERE xid IS NOT NULL AND age(xid) > age(CAST(:cutoff AS xid))
"""

# The file each token table lives in; VACUUM FULL gives it a new one.
PG_FILES = "SELECT relname, pg_relation_filenode(oid) FROM pg_class WHERE oid = ANY(:tables)"

# The token tables' oids (resolved through the search path, as the daemon's queries are).
PG_TABLE_OIDS = "SELECT to_regclass(name)::oid FROM unnest(CAST(:names AS text[])) AS name"

# Rewrite the token tables (and their TOAST tables): only live rows are copied.
PG_REWRITE = "VACUUM (FULL) " + ", ".join(TOKEN_TABLES)
# The same without waiting for any lock, for a transaction-mode pooler (no session settings).
PG_REWRITE_SKIP_LOCKED = "VACUUM (FULL, SKIP_LOCKED) " + ", ".join(TOKEN_TABLES)


class StorageScrubber:
    """Removes the freed copies of erased rows from the live database (see module docstring).

    ``after_erasure`` coalesces: a caller whose erasure committed before a scrub began is
    served by that scrub. One scrub runs at a time.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        transaction_pooler: bool = False,
        lock_timeout_ms: int = 200,
        snapshot_wait: float = 2.0,
        busy_timeout_ms: int = 1000,
        busy_retries: int = 3,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._telemetry = telemetry  # counts the failed passes of the scrub loop
        self._engine = engine
        self._transaction_pooler = transaction_pooler
        self._lock_timeout_ms = lock_timeout_ms
        self._snapshot_wait = snapshot_wait
        self._busy_timeout_ms = busy_timeout_ms
        self._busy_retries = busy_retries
        self._lock = asyncio.Lock()
        self._requested = 0
        self._done = 0

    @property
    def pending(self) -> bool:
        """True while an erasure's freed storage has not been scrubbed yet."""
        return self._done < self._requested

    async def after_erasure(self) -> bool:
        """Scrub now after an erasure committed; True when done, False when left pending."""
        self._requested += 1
        return await self._scrub(self._requested)

    async def scrub_pending(self) -> bool:
        """Retry a pending scrub; True when nothing is pending any more."""
        if not self.pending:
            return True
        return await self._scrub(self._requested)

    async def run(self, stop: asyncio.Event, interval: float = 30.0) -> None:
        """Scrub once, then retry a pending scrub every ``interval`` seconds until ``stop``."""
        # An erasure before a crash may have gone unscrubbed. Done, it is the loop's first
        # successful pass (the Periodic below waits an interval before its own).
        if await self.after_erasure() and self._telemetry is not None:
            self._telemetry.loop_succeeded("storage_scrub")
        loop = Periodic(
            "storage scrub",
            self.scrub_pending,
            interval,
            name="storage_scrub",
            telemetry=self._telemetry,
            database_unavailable=is_database_unavailable,
            wait_first=True,
            logger=log,
        )
        await loop.run(stop)

    async def _scrub(self, ticket: int) -> bool:
        async with self._lock:
            if self._done >= ticket:
                return True  # a scrub that began after this erasure has finished
            covered = self._requested  # every erasure so far committed before this scrub
            try:
                async with self._engine.connect() as connection:
                    if self._engine.dialect.name == "postgresql":
                        done = await self._rewrite_postgresql(connection)
                    else:
                        outside = await connection.execution_options(isolation_level="AUTOCOMMIT")
                        done = await self._checkpoint_sqlite(outside)
            except (  # busy, locked, unreachable
                SQLAlchemyError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                OSError,
            ) as error:
                log.warning("storage scrub failed (%s); will retry", type(error).__name__)
                done = False
            if done:
                self._done = max(self._done, covered)
            return done

    async def _checkpoint_sqlite(self, connection: AsyncConnection) -> bool:
        # The checkpoint waits for writers and readers through the busy handler: wait less
        # than the daemon's transactions do, so that a long one delays the scrub, not the caller.
        await connection.exec_driver_sql(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        try:
            for attempt in range(self._busy_retries):
                busy = (await connection.exec_driver_sql(SQLITE_CHECKPOINT)).one()[0]
                if busy == 0:
                    return True
                await asyncio.sleep(0.05 * 2**attempt)
        finally:
            await connection.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        log.warning("WAL checkpoint stayed busy; the scrub will be retried")
        return False

    async def _rewrite_postgresql(self, connection: AsyncConnection) -> bool:
        cutoff = int((await _rows(connection, PG_CUTOFF))[0][0])
        if not await self._wait_for_old_snapshots(connection, cutoff):
            log.warning("a transaction older than the erasure is open; the scrub will be retried")
            return False
        rows = await _rows(connection, PG_TABLE_OIDS, {"names": list(TOKEN_TABLES)})
        oids = [row[0] for row in rows]
        before = await self._files(connection, oids)
        try:
            await self._vacuum(connection)
        except asyncpg.PostgresError as error:
            log.warning("VACUUM FULL did not run (%s); will retry", type(error).__name__)
            return False
        after = await self._files(connection, oids)
        kept = sorted(name for name, node in after.items() if before.get(name) == node)
        if kept:
            log.warning(
                "VACUUM FULL left %s unchanged (in use, or not owned by this role); will retry",
                ", ".join(kept),
            )
            return False
        # A standby's feedback could have pulled the horizon back while the tables were copied.
        return await self._older_snapshots(connection, cutoff) == 0

    async def _vacuum(self, connection: AsyncConnection) -> None:
        """Run the rewrite outside any transaction, each statement one simple-protocol message
        (asyncpg's ``execute`` without arguments): SQLAlchemy's would be prepared in one
        round trip and run in another, which a transaction-mode pooler may send to two
        different server connections."""
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None  # a live asyncpg connection while ours is checked out
        if self._transaction_pooler:
            await driver.execute(PG_REWRITE_SKIP_LOCKED)
            return
        await driver.execute(f"SET lock_timeout = {int(self._lock_timeout_ms)}")
        try:
            await driver.execute(PG_REWRITE)
        finally:
            await driver.execute("RESET lock_timeout")

    async def _wait_for_old_snapshots(self, connection: AsyncConnection, cutoff: int) -> bool:
        deadline = time.monotonic() + self._snapshot_wait
        while await self._older_snapshots(connection, cutoff):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    @staticmethod
    async def _files(connection: AsyncConnection, oids: list[int]) -> dict[str, int]:
        rows = await _rows(connection, PG_FILES, {"tables": oids})
        return {str(name): int(node) for name, node in rows}

    @staticmethod
    async def _older_snapshots(connection: AsyncConnection, cutoff: int) -> int:
        rows = await _rows(connection, PG_OLDER_SNAPSHOTS, {"cutoff": cutoff % 2**32})
        return int(rows[0][0])


async def _rows(
    connection: AsyncConnection, statement: str, parameters: dict[str, object] | None = None
) -> list[tuple[Any, ...]]:
    """``statement``'s rows, read in a transaction of its own: outside one, a transaction-mode
    pooler may prepare it on one server connection and run it on another."""
    async with connection.begin():
        return [tuple(row) for row in await connection.execute(text(statement), parameters)]
