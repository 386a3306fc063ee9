"""What one claim costs PostgreSQL as the connected mailboxes grow: one job due, in one
mailbox of N, claimed by a call of each claim function (the release before's and this one's),
on analysed tables. Prints the median time of a claim per function and N. Never passes or
fails on time (docs/performance.md "Thirteenth pass").

    .venv/bin/python bench/claim_scaling.py [--mailboxes 20,1000,5000] [--claims 61]
        [--sent 20] [--claimed-today 0,1000,9000]
        [--functions mailbox_worker_claim_0021,mailbox_worker_claim_0022]

Each mailbox but the one with the due job has ``--sent`` jobs sent long ago (the history a
mailbox in use has; the release before 0021 read past them for every mailbox). With
``--claimed-today``, the due job's mailbox has sent that many jobs in the last day (claimed two
hours ago): each claim of it reads them for its daily cap. A function a
later migration dropped is made again from its migration's text for the run.

PostgreSQL runs at MAILBOX_WORKER_TEST_POSTGRES_URL (a scratch database per N, dropped).
Between claims the job is put back in the queue; every claim must take it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import time

import asyncpg
from queue_throughput import Ours, scratch_postgres

from mailbox_worker.db.migrations import VERSIONS, load_version

CALL = """
SELECT (claim.claimed_job).id FROM {function}(
    now(), 8, 4, CAST(ARRAY['microsoft'] AS varchar[]), ARRAY[30], ARRAY[10000],
    now() - interval '1 minute', now() - interval '1 day', interval '1 minute',
    interval '1 day', 'o1', now() + interval '1 minute', now(), 'w1') AS claim
"""
"""A claim of up to 8 jobs with the providers' defaults (concurrency 4, Exchange's rate and
daily cap), as a worker with 8 free slots makes it."""


def function_text(function: str) -> str:
    """``CREATE FUNCTION`` of the claim function named ``function`` (``…_claim_NNNN``), from
    its migration's file."""
    version = function.rsplit("_", 1)[1]
    (path,) = VERSIONS.glob(f"{version}_*.py")
    return str(load_version(path.name).CREATE)


async def claim_times(
    dsn: str, mailboxes: int, functions: list[str], claims: int, sent: int, claimed_today: int
) -> list[float]:
    """The median seconds of a claim by each of ``functions`` with ``mailboxes`` connected
    mailboxes, one of which has one due job and ``claimed_today`` jobs sent today, and each
    other ``sent`` jobs sent long ago."""
    connection = await asyncpg.connect(dsn)
    try:
        for function in functions:  # one a later migration dropped: made again
            exists = "SELECT count(*) FROM pg_proc WHERE proname = $1"
            if not await connection.fetchval(exists, function):
                await connection.execute(function_text(function))
        job_id = await connection.fetchval("SELECT id FROM jobs")
        # Copies of the first mailbox, connected as it is (bulk, not measured).
        columns = [
            row[0]
            for row in await connection.fetch(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'mailboxes' AND column_name NOT IN ('id', 'address')"
            )
        ]
        listed = ", ".join(columns)
        await connection.execute(
            f"INSERT INTO mailboxes (id, address, {listed}) "  # noqa: S608 - catalog names
            f"SELECT 'mbx_copy' || n, 'copy' || n || '@contoso.example', {listed} "
            f"FROM mailboxes, generate_series(2, {mailboxes}) AS n"
        )
        job_columns = ", ".join(
            row[0]
            for row in await connection.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'jobs' "
                "AND column_name NOT IN ('id', 'mailbox_id', 'state', 'idempotency_key')"
            )
        )
        await connection.execute(
            f"INSERT INTO jobs (id, mailbox_id, state, {job_columns}) "  # noqa: S608 - catalog
            f"SELECT 'job_sent' || n || '_' || k, 'mbx_copy' || n, 'sent', {job_columns} "
            f"FROM jobs, generate_series(2, {mailboxes}) AS n, generate_series(1, {sent}) AS k"
        )
        await connection.execute("UPDATE jobs SET claimed_at = now() - interval '2 days'")
        # The due job's own mailbox: jobs sent today, inside the daily window but not the
        # rate's (its cap is 10,000 recipients: fewer, so that it is not deferred).
        await connection.execute(
            f"INSERT INTO jobs (id, mailbox_id, state, {job_columns}) "  # noqa: S608 - catalog
            f"SELECT 'job_today' || k, mailbox_id, 'sent', {job_columns} "
            f"FROM jobs, generate_series(1, {claimed_today}) AS k WHERE id = $1",
            job_id,
        )
        await connection.execute(
            "UPDATE jobs SET claimed_at = now() - interval '2 hours' WHERE id LIKE 'job_today%'"
        )
        await connection.execute("ANALYZE")
        medians = []
        for function in functions:
            times = []
            for _ in range(claims):
                await connection.execute(
                    "UPDATE jobs SET state = 'queued', lease_owner = NULL, claimed_at = NULL "
                    "WHERE id = $1",
                    job_id,
                )
                started = time.perf_counter()
                rows = await connection.fetch(CALL.format(function=function))
                times.append(time.perf_counter() - started)
                assert rows[0][0] is not None, function  # the job was claimed
            medians.append(statistics.median(times))
        return medians
    finally:
        await connection.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", default="20,1000,5000")
    parser.add_argument("--claims", type=int, default=61)
    parser.add_argument("--sent", type=int, default=20)
    parser.add_argument("--claimed-today", default="0")
    parser.add_argument(
        "--functions", default="mailbox_worker_claim_0021,mailbox_worker_claim_0022"
    )
    args = parser.parse_args()
    base = os.environ.get("MAILBOX_WORKER_TEST_POSTGRES_URL")
    if not base:
        print("set MAILBOX_WORKER_TEST_POSTGRES_URL to measure the claim")
        return
    functions = args.functions.split(",")
    print(
        f"one due job, {args.sent} sent per other mailbox, a claim of up to 8,"
        f" median of {args.claims} claims per function"
    )
    sizes = [int(each) for each in args.mailboxes.split(",")]
    busy = [int(each) for each in args.claimed_today.split(",")]
    for mailboxes, claimed_today in itertools.product(sizes, busy):
        url, dsn, drop = await scratch_postgres(base)
        try:
            ours = Ours(url)
            try:
                await ours.prepare(1)
                await ours.fill(1)
            finally:
                await ours.engine.dispose()
            medians = await claim_times(
                dsn, mailboxes, functions, args.claims, args.sent, claimed_today
            )
        finally:
            await drop()
        figures = "  ".join(
            f"{function} {median * 1e3:6.2f} ms"
            for function, median in zip(functions, medians, strict=True)
        )
        today = f", {claimed_today} sent today by the due job's" if claimed_today else ""
        print(f"  {mailboxes:6d} connected mailboxes{today}: {figures}")


if __name__ == "__main__":
    asyncio.run(main())
