"""Queue throughput: drain (claim + start + finish of no-op jobs) and enqueue, ours against
pgqueuer, a raw asyncpg ``SKIP LOCKED`` loop and the floor (``queue_layouts.FLOOR``: the fewest
writes promise 1 needs per job, without promise 5's mailbox limits) on the same PostgreSQL in
the same run,
and ours on SQLite. Prints jobs/s, the ratios ours/pgqueuer and ours/raw, the CPU each drained job
cost this process (the queue's client side) and, when the server runs on this machine,
PostgreSQL (all its processes, from /proc), and the database work per processed job
(statements, transactions, commits and rollbacks, counted with SQLAlchemy event listeners).
Never passes or fails on time (issue 9, bench (a)).

    make bench    # or: .venv/bin/python bench/queue_throughput.py [--sizes 1000,10000]
        [--workers 4] [--batch 100] [--mailboxes 20] [--enqueue-jobs 1000] [--skip-references]
        [--limits none|unbinding] [--analysed] [--history N]

PostgreSQL runs when MAILBOX_WORKER_TEST_POSTGRES_URL is set (a scratch database is created
and dropped); the references need the ``bench`` extra (requirements/bench.txt).

Ours drains as the daemon's worker does: ``--workers`` claimers, each claiming up to
``--batch`` jobs at once and running ``start_attempt`` then ``finish`` for each claimed job
concurrently. Mailbox limits are lifted (no rate, no daily cap, concurrency far above the
batch): this measures the queue, not the limits; ``--limits unbinding`` sets a rate and a
daily cap too high to bind, so that the claim reads the mailboxes' usage as it does with the
providers' defaults; ``--analysed`` gathers the tables' statistics before the drain, as
autovacuum keeps them in a running database (the planner then plans differently, and up to
migration 0019 compiled the claim with its JIT; docs/performance.md "Thirteenth pass");
``--history N`` first puts N jobs sent two days ago in the tables and vacuums them, as a
database in use holds its finished jobs (docs/performance.md "Eighteenth pass"). A
claim locks its mailboxes' rows, so jobs are spread over ``--mailboxes`` mailboxes. The
drain's jobs are inserted in bulk beforehand; enqueue is measured separately, one job per
``JobStore.enqueue`` (one transaction each).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from mailbox_worker.clock import new_id
from mailbox_worker.config import DatabaseSettings
from mailbox_worker.db import migrate
from mailbox_worker.db.accounts import AccountStore
from mailbox_worker.db.engine import create_engine, create_session_factory
from mailbox_worker.db.mailboxes import MailboxStore
from mailbox_worker.db.models import Job, JobContent
from mailbox_worker.jobs.limits import LimitDefaults, ProviderLimits
from mailbox_worker.jobs.queue import JobQueue
from mailbox_worker.jobs.store import JobStore, NewJob
from mailbox_worker.jobs.transitions import Outcome
from mailbox_worker.states import JobState

sys.path.insert(0, str(Path(__file__).parent))
import queue_layouts
import queue_references
from _daemon import postgres_postmaster
from queue_references import CpuMeter, Drained

NO_LIMITS = LimitDefaults(max_concurrency=1_000_000, providers={})
UNBINDING_LIMITS = LimitDefaults(
    max_concurrency=1_000_000,
    providers={"microsoft": ProviderLimits(rate_per_minute=1_000_000, daily_recipient_cap=10**9)},
)
"""Limits as a provider's defaults set them, too high to bind: the claim reads every mailbox's
usage in the rate and daily windows, as it does in production, and defers nothing."""
LIMITS = {"none": NO_LIMITS, "unbinding": UNBINDING_LIMITS}
PAYLOAD = {"to": [{"address": "ap@fabrikam.example"}], "subject": "Invoice", "text": "x" * 500}
SENT = Outcome(JobState.SENT)
LEASE = dt.timedelta(seconds=60)


@contextmanager
def counting(engine: AsyncEngine) -> Iterator[Counter[str]]:
    """Statements, transactions begun, commits and rollbacks on ``engine`` while open, as
    SQLAlchemy sees them (an autocommit statement shows as a begin and a rollback that send
    nothing: the server's count is ``server_transactions``)."""
    counts: Counter[str] = Counter()
    sync = engine.sync_engine

    def on_statement(*_: Any) -> None:
        counts["statements"] += 1

    def on(name: str) -> Callable[..., None]:
        def count(*_: Any) -> None:
            counts[name] += 1

        return count

    listeners = [
        ("before_cursor_execute", on_statement),
        ("begin", on("sa_begins")),
        ("commit", on("sa_commits")),
        ("rollback", on("sa_rollbacks")),
    ]
    for name, listener in listeners:
        event.listen(sync, name, listener)
    try:
        yield counts
    finally:
        for name, listener in listeners:
            event.remove(sync, name, listener)


class Ours:
    """The engine's queue on one database: a connected account with ``mailbox_count``
    mailboxes."""

    def __init__(self, url: str, limits: LimitDefaults = NO_LIMITS) -> None:
        self.engine = create_engine(DatabaseSettings(url=url))
        self.sessions = create_session_factory(self.engine)
        self.queue = JobQueue(self.sessions, limits=limits)
        self.store = JobStore(self.sessions)
        self.account_id = ""
        self.mailbox_ids: list[str] = []

    async def prepare(self, mailbox_count: int) -> None:
        await migrate.upgrade(self.engine)
        account = await AccountStore(self.sessions).create_account("bench")
        mailboxes = MailboxStore(self.sessions)
        self.account_id = account.id
        for number in range(mailbox_count):
            mailbox = await mailboxes.create(account.id, "microsoft", ["send"], actor="bench")
            await mailboxes.mark_connected(mailbox.id, f"b{number}@contoso.example", ["Send"])
            self.mailbox_ids.append(mailbox.id)

    async def enqueue(self, jobs: int) -> float:
        started = time.perf_counter()
        for number in range(jobs):
            await self.store.enqueue(
                NewJob(
                    self.account_id,
                    self.mailbox_ids[number % len(self.mailbox_ids)],
                    "send",
                    PAYLOAD,
                    hashlib.sha256(str(number).encode()).hexdigest(),
                    "contoso.example",
                    idempotency_key=f"e{uuid.uuid4().hex}",
                )
            )
        return jobs / (time.perf_counter() - started)

    async def fill(self, jobs: int, history: int = 0) -> None:
        """``jobs`` queued jobs, inserted in bulk (not what is measured), with ids made as the
        daemon makes them (``new_id``); first ``history`` jobs sent two days ago, as a
        database in use holds (``--history``)."""
        now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        before = now - dt.timedelta(days=2)
        rows = []
        for number in range(history + jobs):
            job_id = new_id("job")
            sent = number < history
            rows.append(
                {
                    "id": job_id,
                    "account_id": self.account_id,
                    "mailbox_id": self.mailbox_ids[number % len(self.mailbox_ids)],
                    "mode": "send",
                    "state": JobState.SENT if sent else JobState.QUEUED,
                    "request_sha256": "0" * 64,
                    "message_id": f"<{job_id}@contoso.example>",
                    "attempts": 1 if sent else 0,
                    "transient_failures": 0,
                    "run_after": before if sent else now,
                    "created_at": before if sent else now,
                    "updated_at": before if sent else now,
                    "claimed_at": before if sent else None,
                    "finished_at": before if sent else None,
                    "priority": 0,
                }
            )
        jobs += history
        async with self.sessions.begin() as session:
            for start in range(0, jobs, 1000):
                chunk = rows[start : start + 1000]
                await session.execute(insert(Job), chunk)
                await session.execute(
                    insert(JobContent), [{"job_id": r["id"], "payload": PAYLOAD} for r in chunk]
                )

    async def vacuum(self) -> None:
        """The history's pages marked visible to all, as autovacuum leaves them."""
        async with self.engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text("VACUUM"))

    async def analyse(self) -> None:
        """The tables' statistics gathered, as autovacuum gathers them in a running
        database (the drain's tables are otherwise too new to have any)."""
        async with self.engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text("ANALYZE"))

    async def drain(
        self, jobs: int, workers: int, batch: int, dsn: str | None, meter: CpuMeter
    ) -> tuple[Drained, Counter[str]]:
        async def run(item: Any) -> None:
            assert await self.queue.start_attempt(item.lease)
            assert await self.queue.finish(item.lease, SENT)

        finished = 0

        async def work(name: str) -> int:
            nonlocal finished
            done = 0
            while finished < jobs:
                claimed = await self.queue.claim(name, batch, LEASE)
                if not claimed:
                    # Another claimer holds the mailboxes' locks (or the last jobs are being
                    # finished): wait as an idle worker would, without asking the database.
                    await asyncio.sleep(0.001)
                    continue
                await asyncio.gather(*(run(item) for item in claimed))
                done += len(claimed)
                finished += len(claimed)
            return done

        before = await server_transactions(dsn) if dsn else 0
        with counting(self.engine) as counts, meter.measuring():
            started = time.perf_counter()
            done = sum(await asyncio.gather(*(work(f"w{n}") for n in range(workers))))
            seconds = time.perf_counter() - started
        if dsn:
            await asyncio.sleep(1.0)  # statistics reach pg_stat_database within a second
            counts["pg_transactions"] = await server_transactions(dsn) - before
        assert done == jobs, (done, jobs)
        return meter.drained(jobs, seconds), counts


async def server_transactions(dsn: str) -> int:
    """Transactions committed or rolled back in the database so far, as PostgreSQL counts
    them (an autocommit statement is one; SQLAlchemy's own events do not see those)."""
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        count = await connection.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()"
        )
    finally:
        await connection.close()
    return int(count)


async def job_updates(dsn: str) -> tuple[int, int]:
    """Updates of ``jobs`` rows so far, and how many of them were heap-only (HOT: no index
    touched), as PostgreSQL counts them (docs/performance.md "The queue's writes")."""
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'jobs'"
        )
    finally:
        await connection.close()
    return (int(row[0]), int(row[1])) if row else (0, 0)


async def ours(
    url: str,
    args: argparse.Namespace,
    size: int,
    dsn: str | None = None,
    meter: CpuMeter | None = None,
) -> dict[str, Any]:
    bench = Ours(url, LIMITS[args.limits])
    try:
        await bench.prepare(args.mailboxes)
        await bench.fill(size, args.history)
        if args.history:
            await bench.vacuum()
        if args.analysed:
            await bench.analyse()
        drained, counts = await bench.drain(
            size, args.workers, args.batch, dsn, meter or CpuMeter(None)
        )
        enqueue = await bench.enqueue(min(size, args.enqueue_jobs))
    finally:
        await bench.engine.dispose()
    if dsn:
        # Read once every connection of the run has closed: a backend hands its statistics
        # over when it exits (an idle one may keep them for seconds). Only the drain updates
        # jobs; the fill and the enqueue insert them.
        await asyncio.sleep(0.5)
        counts["job_updates"], counts["hot_updates"] = await job_updates(dsn)
    per_job = {name: count / size for name, count in counts.items()}
    return {"drain": drained.rate, "drained": drained, "enqueue": enqueue, "per_job": per_job}


@contextmanager
def scratch_sqlite() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as folder:
        yield f"sqlite+aiosqlite:///{folder}/bench.db"


async def scratch_postgres(base: str) -> tuple[str, str, Callable[[], Awaitable[None]]]:
    """A new database: its SQLAlchemy URL, its asyncpg DSN, and how to drop it."""
    import asyncpg

    name = f"mw_bench_{uuid.uuid4().hex[:8]}"
    admin = make_url(base).set(drivername="postgresql").render_as_string(False)
    connection = await asyncpg.connect(admin)
    await connection.execute(f'CREATE DATABASE "{name}"')

    async def drop() -> None:
        await connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await connection.close()

    url = make_url(base).set(database=name)
    dsn = url.set(drivername="postgresql").render_as_string(False)
    return url.render_as_string(False), dsn, drop


def ratio(ours: float, reference: float | None) -> str:
    return f"{ours / reference:5.2f}" if reference else "  n/a"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--mailboxes", type=int, default=20)
    parser.add_argument("--enqueue-jobs", type=int, default=1000)
    parser.add_argument("--skip-references", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument(
        "--analysed",
        action="store_true",
        help="ANALYZE ours' tables after the fill, as autovacuum would in a running database",
    )
    parser.add_argument(
        "--history",
        type=int,
        default=0,
        help="jobs sent two days before the drain, in ours' tables (a database in use); "
        "vacuumed, as autovacuum would",
    )
    parser.add_argument(
        "--limits",
        choices=sorted(LIMITS),
        default="none",
        help="none: no rate or daily cap (the queue alone); unbinding: both set too high to bind",
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    postgres = os.environ.get("MAILBOX_WORKER_TEST_POSTGRES_URL")
    print(
        f"workers={args.workers} batch={args.batch} mailboxes={args.mailboxes} "
        f"enqueue_jobs={args.enqueue_jobs} limits={args.limits} analysed={args.analysed} "
        f"history={args.history} "
        f"cpus={os.cpu_count()}"
    )
    for size in sizes:
        print(f"\nN={size}")
        if not args.skip_sqlite:
            with scratch_sqlite() as url:
                lite = await ours(url, args, size)
            print(
                f"  sqlite   ours      drain {lite['drain']:8.0f} jobs/s  "
                f"enqueue {lite['enqueue']:6.0f} jobs/s  {_cpu(lite['drained'])}  "
                f"per job: {_per_job(lite)}"
            )
        if not postgres:
            print("  postgresql: set MAILBOX_WORKER_TEST_POSTGRES_URL to measure it")
            continue
        url, dsn, drop = await scratch_postgres(postgres)
        meter = CpuMeter(await postgres_postmaster(postgres))
        try:
            pg = await ours(url, args, size, dsn, meter)
            raw_drain = raw_enqueue = pgq_drain = pgq_enqueue = floor_drain = None
            best_batch = 0
            if not args.skip_references:
                enqueue_jobs = min(size, args.enqueue_jobs)
                raw = await queue_references.raw_drain(dsn, size, args.workers, meter)
                raw_drain = raw.rate
                raw_enqueue = await queue_references.raw_enqueue(dsn, enqueue_jobs)
                floor = await queue_layouts.layout_drain(
                    dsn, queue_layouts.FLOOR, size, args.workers, meter, args.batch
                )
                floor_drain = floor.rate
                pgq_drain = 0.0
                pgq_best = raw
                for batch in (10, 100):
                    pgq = await queue_references.pgqueuer_drain(dsn, size, batch, meter)
                    print(
                        f"  postgres pgqueuer  drain {pgq.rate:8.0f} jobs/s  (batch {batch})  "
                        f"{_cpu(pgq)}"
                    )
                    if pgq.rate > pgq_drain:
                        pgq_drain, best_batch, pgq_best = pgq.rate, batch, pgq
                pgq_enqueue = await queue_references.pgqueuer_enqueue(dsn, enqueue_jobs)
                print(
                    f"  postgres raw       drain {raw_drain:8.0f} jobs/s  "
                    f"enqueue {raw_enqueue:6.0f} jobs/s  {_cpu(raw)}"
                )
                print(
                    f"  postgres floor     drain {floor_drain:8.0f} jobs/s  "
                    f"(promise 1's fewest writes, no mailbox limits)  {_cpu(floor)}"
                )
                print(
                    f"  postgres pgqueuer  drain {pgq_drain:8.0f} jobs/s  "
                    f"enqueue {pgq_enqueue:6.0f} jobs/s  (best batch {best_batch})  "
                    f"{_cpu(pgq_best)}"
                )
        finally:
            await drop()
        print(
            f"  postgres ours      drain {pg['drain']:8.0f} jobs/s  "
            f"enqueue {pg['enqueue']:6.0f} jobs/s  {_cpu(pg['drained'])}  "
            f"per job: {_per_job(pg)}"
        )
        print(
            f"  ratios   drain ours/pgqueuer {ratio(pg['drain'], pgq_drain)}  "
            f"ours/raw {ratio(pg['drain'], raw_drain)}  "
            f"ours/floor {ratio(pg['drain'], floor_drain)}  "
            f"floor/pgqueuer {ratio(floor_drain or 0.0, pgq_drain)}   "
            f"enqueue ours/pgqueuer {ratio(pg['enqueue'], pgq_enqueue)}  "
            f"ours/raw {ratio(pg['enqueue'], raw_enqueue)}"
        )


def _cpu(drained: Drained) -> str:
    """CPU per drained job: this process's (the queue's client side), PostgreSQL's."""
    server = "n/a" if drained.server_cpu is None else f"{drained.server_cpu * 1e6:.0f} us"
    return f"CPU per job: client {drained.client_cpu * 1e6:.0f} us, PostgreSQL {server}"


def _per_job(figures: dict[str, Any]) -> str:
    """Per processed job: statements sent, SQLAlchemy's transaction events, and (PostgreSQL)
    the transactions the server counted."""
    per_job = figures["per_job"]
    names = ["statements", "sa_begins", "sa_commits", "sa_rollbacks"]
    if "pg_transactions" in per_job:
        names += ["pg_transactions", "job_updates", "hot_updates"]
    return " ".join(f"{name} {per_job.get(name, 0.0):.2f}" for name in names)


if __name__ == "__main__":
    asyncio.run(main())
