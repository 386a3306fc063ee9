"""End to end against the sandbox: invoices POSTed to the daemon's HTTP API, sent by its worker
to the sandbox's Graph, followed to their final state — on SQLite and (if configured)
PostgreSQL, 20 mailboxes, 100 KB PDFs (issue 9, benchmark b).

    .venv/bin/python bench/end_to_end.py [--jobs 1000] [--mailboxes 20] [--concurrency 8]
        [--posters 16] [--databases sqlite postgres] [--floor also|only|no]

Prints, per database: the HTTP enqueue rate and its latency p50/p99, the completion rate (jobs
per second between 10 % and 90 % of them final, and overall), and the daemon's CPU per job (its
process's user + system time over the run, from /proc, divided by the jobs; the sandbox's
likewise, for comparison). The sandbox runs
in a process of its own; the jobs are followed by counting them in the database, not through
the daemon. Ratios are to the figures measured before issue 9 (docs/performance.md). Never
passes or fails on time. PostgreSQL runs when MAILBOX_WORKER_TEST_POSTGRES_URL is set.

On PostgreSQL the same load then goes to the floor (``bench/_floor_daemon.py``: the steps
promise 1 requires per job, in a process that does nothing else), and the daemon's CPU per
job is printed against the floor's: a floor of what this machine allows a Python process
(docs/performance.md "Twelfth pass").
"""

from __future__ import annotations

import argparse
import asyncio
import time

from _daemon import (
    DaemonProcess,
    JobStates,
    cpu_seconds,
    daemon_environment,
    database_kinds,
    floor_environment,
    follow,
    median,
    pdf_bytes,
    percentile,
    post_invoices,
    postgres_cpu_seconds,
    postgres_postmaster,
    prepare,
    scratch_database,
    start_sandbox,
    work_directory,
)

# Issue 9, before: completion 41 jobs/s (SQLite), 76 (PostgreSQL); daemon CPU 20 / 13 ms per
# job; HTTP enqueue 70 requests/s.
REFERENCE = {
    "sqlite": {"completion": 41.0, "cpu_ms": 20.0, "enqueue": 70.0},
    "postgres": {"completion": 76.0, "cpu_ms": 13.0, "enqueue": 70.0},
}
WARM_UP = 40


async def run(kind: str, arguments: argparse.Namespace, floor: bool = False) -> dict[str, float]:
    pdf = pdf_bytes(100 * 1024)
    with work_directory() as work:
        sandbox = start_sandbox(work / "sandbox", arguments.mailboxes, tokens=floor)
        try:
            async with scratch_database(kind, work) as url:
                if floor:
                    daemon: DaemonProcess = floor_environment(
                        work, sandbox, url, arguments.concurrency
                    )
                else:
                    extra = {"MAILBOX_WORKER_WORKER__CONCURRENCY": str(arguments.concurrency)}
                    daemon = daemon_environment(work, sandbox, url, extra)
                    daemon.serve_arguments = arguments.serve.split()
                await daemon.start()
                states = JobStates(url, "floor_jobs" if floor else "jobs")
                try:
                    if not floor:
                        await prepare(daemon, sandbox, arguments.mailboxes)
                    # Tokens fetched and connections opened before the clock starts.
                    warm = await post_invoices(daemon, WARM_UP, pdf, arguments.posters)
                    await follow(states, 0, len(warm.job_ids), time.perf_counter(), 300)
                    cpu_before = daemon.cpu_seconds()
                    by_process_before = {pid: cpu_seconds(pid) for pid in daemon.pids()}
                    sandbox_before = cpu_seconds(sandbox.pid)
                    postmaster = await postgres_postmaster(url) if kind == "postgres" else None
                    postgres_before = postgres_cpu_seconds(postmaster) if postmaster else 0.0
                    started = time.perf_counter()
                    following = asyncio.create_task(
                        follow(states, WARM_UP, arguments.jobs, started, 1800)
                    )
                    posted = await post_invoices(daemon, arguments.jobs, pdf, arguments.posters)
                    progress = await following
                    cpu = daemon.cpu_seconds() - cpu_before
                    by_process = {
                        pid: cpu_seconds(pid) - before for pid, before in by_process_before.items()
                    }
                    sandbox_cpu = cpu_seconds(sandbox.pid) - sandbox_before
                    postgres_cpu = (
                        postgres_cpu_seconds(postmaster) - postgres_before if postmaster else None
                    )
                    counts = await states.counts()
                finally:
                    await states.close()
                    daemon.stop()
        finally:
            sandbox.stop()
    jobs = arguments.jobs
    return {
        "enqueue": jobs / posted.seconds,
        "enqueue_p50_ms": 1000 * median(posted.latencies),
        "enqueue_p99_ms": 1000 * percentile(posted.latencies, 0.99),
        "completion": progress.rate_between(jobs // 10, jobs * 9 // 10),
        "completion_overall": jobs / progress.seconds_until(jobs),
        "cpu_ms": 1000 * cpu / jobs,
        "sandbox_cpu_ms": 1000 * sandbox_cpu / jobs,
        "postgres_cpu_ms": 1000 * postgres_cpu / jobs if postgres_cpu is not None else -1.0,
        # With --serve '--workers N': the first process serves the API, the others work.
        "api_cpu_ms": 1000 * by_process[daemon.pid] / jobs,
        "processes": len(by_process),
        "sent": counts.get("sent", 0) - WARM_UP,
        "not_sent": sum(count for state, count in counts.items() if state != "sent"),
    }


def report(
    kind: str, figures: dict[str, float], jobs: int, mailboxes: int, floor: bool = False
) -> None:
    reference = REFERENCE[kind]
    print(
        f"end to end, {kind}{' (floor)' if floor else ''}, {jobs} jobs, {mailboxes} mailboxes, "
        "100 KB PDF:\n"
        f"  HTTP enqueue      {figures['enqueue']:8.0f} req/s "
        f"({figures['enqueue'] / reference['enqueue']:.2f} x {reference['enqueue']:.0f}), "
        f"p50 {figures['enqueue_p50_ms']:.0f} ms, p99 {figures['enqueue_p99_ms']:.0f} ms\n"
        f"  completion        {figures['completion']:8.0f} jobs/s 10-90 % "
        f"({figures['completion'] / reference['completion']:.2f} x {reference['completion']:.0f}),"
        f" {figures['completion_overall']:.0f} jobs/s overall\n"
        f"  daemon CPU        {figures['cpu_ms']:8.2f} ms/job "
        f"({figures['cpu_ms'] / reference['cpu_ms']:.2f} x {reference['cpu_ms']:.0f} ms); "
        f"the sandbox's {figures['sandbox_cpu_ms']:.2f} ms/job"
        + (
            f"; PostgreSQL's {figures['postgres_cpu_ms']:.2f} ms/job"
            if figures["postgres_cpu_ms"] >= 0
            else ""
        )
        + "\n"
        f"  outcome           {figures['sent']:.0f} sent, {figures['not_sent']:.0f} not sent"
    )
    if figures["processes"] > 1:
        worker = figures["cpu_ms"] - figures["api_cpu_ms"]
        print(
            f"  of which           {figures['api_cpu_ms']:8.2f} ms/job in the API process, "
            f"{worker:.2f} ms/job in {figures['processes'] - 1:.0f} worker process(es)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--mailboxes", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8, help="the daemon's worker")
    parser.add_argument("--posters", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--serve", default="", help="more arguments of serve: '--workers 2'")
    parser.add_argument(
        "--floor",
        choices=["also", "only", "no"],
        default="also",
        help="on PostgreSQL, also (or only) run bench/_floor_daemon.py in the daemon's place",
    )
    arguments = parser.parse_args()
    measured: dict[str, dict[str, float]] = {}
    for kind in database_kinds(arguments.databases):
        runs = {"also": [False, True], "only": [True], "no": [False]}[arguments.floor]
        for floor in runs if kind == "postgres" else [] if arguments.floor == "only" else [False]:
            figures = asyncio.run(run(kind, arguments, floor))
            report(kind, figures, arguments.jobs, arguments.mailboxes, floor)
            measured["floor" if floor else kind] = figures
    if "floor" in measured and "postgres" in measured:
        ours, least = measured["postgres"]["cpu_ms"], measured["floor"]["cpu_ms"]
        print(
            f"daemon CPU per job, PostgreSQL: {ours:.2f} ms against the floor's {least:.2f} ms "
            f"({ours / least:.2f} x)"
        )


if __name__ == "__main__":
    main()
