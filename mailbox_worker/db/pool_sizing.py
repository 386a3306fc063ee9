"""How many pooled PostgreSQL connections one daemon process can hold at once, and whether
``database.pool_size + database.max_overflow`` covers it (docs/architecture.md#pool-sizing).

What holds a connection at the same moment, each at most once at a time:

* each job slot (``worker.concurrency``): one. A job's steps (read the mailbox, refresh its
  token, mark the attempt, record the outcome) run one after another, and a token refresh
  reads and writes on the connection that holds its advisory lock (``db/locks.py``), so it
  never waits for a second one while it pins the first;
* the worker's claim and housekeeping pass, and its lease renewal: one each;
* revocation retries, the storage scrub, the retention purge and the audit sealer: one each
  (the purge's batches run one after another; the scrub it may ask for waits for the scrub's
  own; the sealer writes on its advisory lock's connection);
* scheduled key rotation: two (its advisory lock's connection, and the vault's reads and
  re-wraps beside it);
* callback delivery, when ``callbacks.url`` is set: one;
* API requests: one each while they run, as many as clients send; ``API_RESERVE`` keeps room
  for a few beside a busy worker. More wait for a free connection (SQLAlchemy's pool timeout,
  30 s), then answer ``503 database_unavailable``.

SQLite is not pooled this way (one writer, connections opened on demand): no rule applies.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import make_url

from mailbox_worker.db.engine import DatabaseSettings

PER_JOB = 1
WORKER_LOOPS = 2
"""The claim-and-housekeeping pass and the lease renewal."""
MAINTENANCE_LOOPS = 4
"""Revocation retries, the storage scrub, the retention purge and the audit sealer."""
KEY_ROTATION = 2
CALLBACKS = 1
API_RESERVE = 2


@dataclass(frozen=True)
class PoolDemand:
    """Connections one process can hold at once, by what holds them."""

    jobs: int
    background: int
    api_reserve: int = API_RESERVE

    @property
    def total(self) -> int:
        return self.jobs + self.background + self.api_reserve


def pool_demand(concurrency: int, *, key_rotation: bool, callbacks: bool) -> PoolDemand:
    """The demand of a process running ``concurrency`` jobs at once; ``key_rotation``: the
    rotation schedule is on (``keys.rotate_every_days > 0``), ``callbacks``: a callback URL
    is configured."""
    background = WORKER_LOOPS + MAINTENANCE_LOOPS
    background += KEY_ROTATION if key_rotation else 0
    background += CALLBACKS if callbacks else 0
    return PoolDemand(jobs=concurrency * PER_JOB, background=background)


def pool_capacity(settings: DatabaseSettings) -> int | None:
    """The most connections the engine's pool opens at once; None on SQLite (no such pool)."""
    if make_url(settings.url).get_backend_name() == "sqlite":
        return None
    return settings.pool_size + settings.max_overflow


def pool_shortfall(settings: DatabaseSettings, demand: PoolDemand) -> str | None:
    """A one-line warning when ``demand`` can exceed the configured pool, else None.

    Not an error: a deployment may size the pool below the peak knowingly (a shared server
    with few connections to spare); jobs and requests then wait for a connection instead.
    """
    capacity = pool_capacity(settings)
    if capacity is None or demand.total <= capacity:
        return None
    return (
        f"database.pool_size + database.max_overflow is {settings.pool_size} + "
        f"{settings.max_overflow} = {capacity} connections, but this process can hold "
        f"{demand.total} at once (worker.concurrency {demand.jobs} + {demand.background} for "
        f"background loops + {demand.api_reserve} for API requests): jobs and requests will "
        "wait for connections; raise the pool or lower worker.concurrency "
        "(docs/architecture.md#pool-sizing)"
    )
