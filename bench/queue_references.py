"""The references ``bench/queue_throughput.py`` measures the engine's queue against, on the same
PostgreSQL database in the same run: pgqueuer (its own API: ``Queries.enqueue`` and a
``QueueManager`` in drain mode with a no-op entrypoint) and a raw asyncpg loop that claims a
batch with ``SELECT … FOR UPDATE SKIP LOCKED`` and completes it with one ``UPDATE``.

Each function takes a plain ``postgresql://`` DSN; an enqueue returns jobs per second, a drain
its ``Drained`` figures (jobs per second and the CPU each drained job cost this process and
PostgreSQL, ``CpuMeter``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from _daemon import postgres_cpu_seconds

RAW_SCHEMA = """
CREATE TABLE IF NOT EXISTS raw_jobs (
    id bigserial PRIMARY KEY,
    state text NOT NULL DEFAULT 'queued',
    payload bytea,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS raw_jobs_queued ON raw_jobs (id) WHERE state = 'queued';
TRUNCATE raw_jobs;
"""
RAW_ENQUEUE = "INSERT INTO raw_jobs (payload) VALUES ($1)"
RAW_CLAIM = """
UPDATE raw_jobs SET state = 'running', updated_at = now()
WHERE id IN (
    SELECT id FROM raw_jobs WHERE state = 'queued' ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING id
"""
RAW_COMPLETE = "UPDATE raw_jobs SET state = 'done', updated_at = now() WHERE id = ANY($1::bigint[])"
PAYLOAD = b"x" * 500


@dataclass(frozen=True)
class Drained:
    """A drain's figures: jobs per second, and the CPU seconds each drained job cost this
    process (the queue's client side) and the PostgreSQL server (None: not on this machine)."""

    rate: float
    client_cpu: float
    server_cpu: float | None


class CpuMeter:
    """The CPU time this process and the PostgreSQL server whose postmaster is ``postmaster``
    (None: not measured) spend within ``measuring()``; ``drained(jobs, seconds)`` makes it a
    ``Drained``. The server's is all of its processes' (``_daemon.postgres_cpu_seconds``), so
    nothing else should use it meanwhile."""

    def __init__(self, postmaster: int | None) -> None:
        self._postmaster = postmaster
        self._client = 0.0
        self._server = 0.0

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        client, server = time.process_time(), self._server_seconds()
        try:
            yield
        finally:
            self._client = time.process_time() - client
            self._server = self._server_seconds() - server

    def drained(self, jobs: int, seconds: float) -> Drained:
        server = self._server / jobs if self._postmaster is not None else None
        return Drained(jobs / seconds, self._client / jobs, server)

    def _server_seconds(self) -> float:
        return postgres_cpu_seconds(self._postmaster) if self._postmaster is not None else 0.0


async def raw_enqueue(dsn: str, jobs: int) -> float:
    """One job per transaction (an implicit one: a single INSERT), from one connection."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(RAW_SCHEMA)
        started = time.perf_counter()
        for _ in range(jobs):
            await connection.execute(RAW_ENQUEUE, PAYLOAD)
        return jobs / (time.perf_counter() - started)
    finally:
        await connection.close()


async def raw_drain(
    dsn: str, jobs: int, workers: int, meter: CpuMeter, batch: int = 100
) -> Drained:
    """Claim ``batch`` jobs (SKIP LOCKED) and complete them, from ``workers`` connections."""
    setup = await asyncpg.connect(dsn)
    try:
        await setup.execute(RAW_SCHEMA)
        await setup.executemany(RAW_ENQUEUE, [(PAYLOAD,)] * jobs)
    finally:
        await setup.close()
    pool = await asyncpg.create_pool(dsn, min_size=workers, max_size=workers)

    async def work() -> int:
        done = 0
        async with pool.acquire() as connection:
            while True:
                ids = [row[0] for row in await connection.fetch(RAW_CLAIM, batch)]
                if not ids:
                    return done
                await connection.execute(RAW_COMPLETE, ids)
                done += len(ids)

    try:
        with meter.measuring():
            started = time.perf_counter()
            counts = await asyncio.gather(*(work() for _ in range(workers)))
            seconds = time.perf_counter() - started
    finally:
        await pool.close()
    assert sum(counts) == jobs, counts
    return meter.drained(jobs, seconds)


async def pgqueuer_enqueue(dsn: str, jobs: int) -> float:
    """pgqueuer's ``Queries.enqueue``, one job a call (a transaction each)."""
    from pgqueuer.queries import Queries

    connection = await asyncpg.connect(dsn)
    try:
        queries = Queries.from_asyncpg_connection(connection)
        await _install(queries)
        started = time.perf_counter()
        for _ in range(jobs):
            await queries.enqueue("noop", PAYLOAD)
        return jobs / (time.perf_counter() - started)
    finally:
        await connection.close()


async def pgqueuer_drain(dsn: str, jobs: int, batch: int, meter: CpuMeter) -> Drained:
    """pgqueuer's ``QueueManager.run(mode=drain)`` with a no-op entrypoint, ``batch`` jobs a
    dequeue; the jobs are enqueued first in batches of 1,000."""
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    connection = await asyncpg.connect(dsn)
    try:
        queries = Queries.from_asyncpg_connection(connection)
        await _install(queries)
        for start in range(0, jobs, 1000):
            count = min(1000, jobs - start)
            await queries.enqueue(["noop"] * count, [PAYLOAD] * count, [0] * count)
        manager = QueueManager(queries)
        done = 0

        @manager.entrypoint("noop")
        async def noop(_job: object) -> None:
            nonlocal done
            done += 1

        with meter.measuring():
            started = time.perf_counter()
            await manager.run(
                dequeue_timeout=timedelta(seconds=0.05),
                batch_size=batch,
                mode=QueueExecutionMode.drain,
                log_aggregation_interval=timedelta(0),
            )
            seconds = time.perf_counter() - started
    finally:
        if not connection.is_closed():
            await connection.close()
    assert done == jobs, (done, jobs)
    return meter.drained(jobs, seconds)


async def _install(queries: object) -> None:
    from pgqueuer.queries import Queries

    assert isinstance(queries, Queries)
    with contextlib.suppress(asyncpg.PostgresError):
        await queries.uninstall()
    await queries.install()
