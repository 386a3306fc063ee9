"""Queue throughput: enqueue, then claim + start + finish, on SQLite and (if configured) PostgreSQL.

Prints figures and ratios; never passes or fails on time. PostgreSQL runs when
MAILBOX_WORKER_TEST_POSTGRES_URL is set (a scratch database is created and dropped).

    .venv/bin/python bench/queue_throughput.py [--jobs 2000] [--workers 4] [--batch 16]
        [--mailboxes 1]

Mailbox limits are lifted (no rate, no daily cap, concurrency far above the batch): this
measures the queue, not the limits. Claimers of one mailbox take turns (the claim locks its
row), so ``--mailboxes`` above 1 is what lets several workers claim at once.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import tempfile
import time
import uuid

from mailbox_worker.config import DatabaseSettings
from mailbox_worker.db import migrate
from mailbox_worker.db.accounts import AccountStore
from mailbox_worker.db.engine import create_engine, create_session_factory
from mailbox_worker.db.mailboxes import MailboxStore
from mailbox_worker.jobs.limits import LimitDefaults
from mailbox_worker.jobs.queue import JobQueue
from mailbox_worker.jobs.store import JobStore, NewJob
from mailbox_worker.jobs.transitions import Outcome

NO_LIMITS = LimitDefaults(max_concurrency=1_000_000, providers={})
PAYLOAD = {"to": [{"address": "ap@fabrikam.example"}], "subject": "Invoice", "text": "x" * 500}


async def run(
    url: str, jobs: int, workers: int, batch: int, mailbox_count: int
) -> dict[str, float]:
    engine = create_engine(DatabaseSettings(url=url))
    await migrate.upgrade(engine)
    sessions = create_session_factory(engine)
    accounts, mailboxes, store = AccountStore(sessions), MailboxStore(sessions), JobStore(sessions)
    queue = JobQueue(sessions, limits=NO_LIMITS)
    account = await accounts.create_account("bench")
    mailbox_ids = []
    for number in range(mailbox_count):
        mailbox = await mailboxes.create(account.id, "microsoft", ["send"], actor="bench")
        await mailboxes.mark_connected(mailbox.id, f"billing{number}@contoso.example", ["Send"])
        mailbox_ids.append(mailbox.id)

    started = time.perf_counter()
    for number in range(jobs):
        await store.enqueue(
            NewJob(
                account.id,
                mailbox_ids[number % mailbox_count],
                "send",
                PAYLOAD,
                str(number),
                "contoso.example",
                idempotency_key=f"k{number}",
            )
        )
    enqueue_seconds = time.perf_counter() - started

    async def work(name: str) -> int:
        done = 0
        while True:
            claimed = await queue.claim(name, batch, dt.timedelta(seconds=60))
            if not claimed and (await queue.count_by_state())["queued"] == 0:
                return done
            for item in claimed:
                await queue.start_attempt(item.lease)
                await queue.finish(item.lease, Outcome("sent"))
                done += 1

    started = time.perf_counter()
    counts = await asyncio.gather(*(work(f"w{n}") for n in range(workers)))
    process_seconds = time.perf_counter() - started
    assert sum(counts) == jobs, counts
    await engine.dispose()
    return {"enqueue_per_s": jobs / enqueue_seconds, "process_per_s": jobs / process_seconds}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--mailboxes", type=int, default=1)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        results["sqlite"] = await run(
            f"sqlite+aiosqlite:///{scratch}/bench.db",
            args.jobs,
            args.workers,
            args.batch,
            args.mailboxes,
        )
    postgres = os.environ.get("MAILBOX_WORKER_TEST_POSTGRES_URL")
    if postgres:
        import asyncpg
        from sqlalchemy.engine import make_url

        name = f"mw_bench_{uuid.uuid4().hex[:8]}"
        admin = make_url(postgres).set(drivername="postgresql").render_as_string(False)
        connection = await asyncpg.connect(admin)
        await connection.execute(f'CREATE DATABASE "{name}"')
        try:
            url = make_url(postgres).set(database=name).render_as_string(False)
            results["postgresql"] = await run(
                url, args.jobs, args.workers, args.batch, args.mailboxes
            )
        finally:
            await connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            await connection.close()
    print(f"jobs={args.jobs} workers={args.workers} batch={args.batch} mailboxes={args.mailboxes}")
    for backend, figures in results.items():
        print(
            f"{backend:<11} enqueue {figures['enqueue_per_s']:8.0f} jobs/s   "
            f"claim+attempt+finish {figures['process_per_s']:8.0f} jobs/s"
        )
    if len(results) == 2:
        for key in ("enqueue_per_s", "process_per_s"):
            ratio = results["postgresql"][key] / results["sqlite"][key]
            print(f"ratio postgresql/sqlite {key}: {ratio:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
