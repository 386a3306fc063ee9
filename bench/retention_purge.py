"""Dispatch latency with and without a concurrent retention purge, on PostgreSQL.

Seeds a scratch database with ``--events`` job events and ``--contents`` finished jobs'
contents, all past their period, then runs one dispatcher (enqueue, untimed; then claim +
start + finish, timed) first alone for ``--baseline`` jobs, then for as long as a
``Retention.purge`` pass runs beside it with the daemon's default batch and pause, then alone
again (the two baselines bracket the purge: a shared machine's load drifts). Prints the
median and p99 of claim→finish in each phase, and the ratio of the purge phase to both
baselines together; never passes or fails on time. Needs MAILBOX_WORKER_TEST_POSTGRES_URL
(a scratch database is created and dropped).

    .venv/bin/python bench/retention_purge.py [--events 100000] [--contents 2000]
        [--baseline 1000] [--batch 500] [--pause 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import time
import uuid

import asyncpg
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailbox_worker.clock import utcnow
from mailbox_worker.config import DatabaseSettings
from mailbox_worker.db import migrate
from mailbox_worker.db.accounts import AccountStore
from mailbox_worker.db.engine import create_engine, create_session_factory
from mailbox_worker.db.mailboxes import MailboxStore
from mailbox_worker.db.models import Job, JobContent, JobEvent
from mailbox_worker.db.retention import Retention, RetentionSettings
from mailbox_worker.jobs.limits import LimitDefaults
from mailbox_worker.jobs.queue import JobQueue
from mailbox_worker.jobs.store import JobStore, NewJob
from mailbox_worker.jobs.transitions import Outcome
from mailbox_worker.states import JobState

NO_LIMITS = LimitDefaults(max_concurrency=1_000_000, providers={})
PAYLOAD = {"to": [{"address": "ap@fabrikam.example"}], "subject": "Invoice", "text": "x" * 500}
SEED_EVENTS = """
INSERT INTO job_events (job_id, at, kind, code)
SELECT :job_id, now() - interval '100 days', 'state', 'seeded' FROM generate_series(1, :count)
"""


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Dispatcher:
    """One worker's path through the queue, timed from the claim to the finish."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], account: str, mailbox: str):
        self._store = JobStore(sessions)
        self._queue = JobQueue(sessions, limits=NO_LIMITS)
        self._account, self._mailbox = account, mailbox
        self._number = 0

    async def one(self) -> float:
        self._number += 1
        await self._store.enqueue(
            NewJob(self._account, self._mailbox, "send", PAYLOAD, str(self._number), "x.example")
        )
        started = time.perf_counter()
        (claimed,) = await self._queue.claim("bench", 1, dt.timedelta(seconds=60))
        await self._queue.start_attempt(claimed.lease)
        await self._queue.finish(claimed.lease, Outcome(JobState.SENT))
        return time.perf_counter() - started


async def run(url: str, args: argparse.Namespace) -> None:
    engine = create_engine(DatabaseSettings(url=url, pool_size=5, max_overflow=0))
    await migrate.upgrade(engine)
    sessions = create_session_factory(engine)
    account = await AccountStore(sessions).create_account("bench")
    mailboxes = MailboxStore(sessions)
    mailbox = await mailboxes.create(account.id, "microsoft", ["send"], actor="bench")
    await mailboxes.mark_connected(mailbox.id, "billing@contoso.example", ["Send"])
    store = JobStore(sessions)
    old_ids = []
    for number in range(args.contents):
        job, _ = await store.enqueue(
            NewJob(account.id, mailbox.id, "send", PAYLOAD, f"old{number}", "x.example")
        )
        old_ids.append(job.id)
    async with sessions.begin() as session:
        await session.execute(
            update(Job)
            .where(Job.id.in_(old_ids))
            .values(state="sent", finished_at=utcnow() - dt.timedelta(days=30))
        )
        await session.execute(text(SEED_EVENTS), {"job_id": old_ids[0], "count": args.events})
    async with engine.begin() as connection:
        await connection.execute(text("ANALYZE"))

    dispatcher = Dispatcher(sessions, account.id, mailbox.id)
    for _ in range(50):  # warm the pool and the plans
        await dispatcher.one()
    alone = [await dispatcher.one() for _ in range(args.baseline)]

    settings = RetentionSettings(batch_size=args.batch, pause=args.pause)
    started = time.perf_counter()
    purge = asyncio.create_task(Retention(sessions, settings).purge())
    beside = []
    while not purge.done():
        beside.append(await dispatcher.one())
    purged = await purge
    purge_seconds = time.perf_counter() - started
    # Alone again: the machine's load drifts; two baselines bracket the purge.
    after = [await dispatcher.one() for _ in range(args.baseline)]
    async with sessions() as session:
        left = await session.scalar(
            select(func.count()).select_from(JobEvent).where(JobEvent.code == "seeded")
        )
        contents_left = await session.scalar(
            select(func.count()).select_from(JobContent).where(JobContent.job_id.in_(old_ids))
        )
    await engine.dispose()

    print(
        f"postgresql: seeded {args.events} old job events and {args.contents} old contents; "
        f"batch {args.batch}, pause {args.pause}s"
    )
    print(
        f"purge: {purged['job_events']} job events and {purged['job_contents']} contents in "
        f"{purge_seconds:.1f} s ({left} seeded events and {contents_left} contents left)"
    )
    for name, samples in (
        ("alone before", alone),
        ("beside purge", beside),
        ("alone after", after),
    ):
        print(
            f"{name:<13} n={len(samples):5d}  median {statistics.median(samples) * 1000:6.2f} ms"
            f"  p99 {percentile(samples, 0.99) * 1000:6.2f} ms"
        )
    both = alone + after
    print(
        f"ratio beside/alone: median {statistics.median(beside) / statistics.median(both):.2f}"
        f"  p99 {percentile(beside, 0.99) / percentile(both, 0.99):.2f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--contents", type=int, default=2000)
    parser.add_argument("--baseline", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=RetentionSettings.batch_size)
    parser.add_argument("--pause", type=float, default=RetentionSettings.pause)
    args = parser.parse_args()
    postgres = os.environ.get("MAILBOX_WORKER_TEST_POSTGRES_URL")
    if not postgres:
        raise SystemExit("set MAILBOX_WORKER_TEST_POSTGRES_URL (a scratch database is made there)")
    name = f"mw_bench_{uuid.uuid4().hex[:8]}"
    admin = make_url(postgres).set(drivername="postgresql").render_as_string(False)
    connection = await asyncpg.connect(admin)
    await connection.execute(f'CREATE DATABASE "{name}"')
    try:
        await run(make_url(postgres).set(database=name).render_as_string(False), args)
    finally:
        await connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await connection.close()


if __name__ == "__main__":
    asyncio.run(main())
