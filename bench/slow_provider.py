"""A slow provider: every Graph ``sendMail`` takes 200 ms at the sandbox (its latency fault,
taken while the request holds one of the mailbox's four slots), 10 mailboxes, the daemon's
worker at concurrency 80 (issue 9, benchmark d).

    .venv/bin/python bench/slow_provider.py [--jobs 1000] [--mailboxes 10] [--concurrency 80]
        [--latency-ms 200] [--databases postgres]

The bound is ``min(concurrency, mailboxes x 4) / latency`` jobs per second (4: the per-mailbox
concurrency limit). The jobs are posted scheduled (``send_at``) for one moment after the last
of them is posted, so that they all become due together and the API's enqueue rate does not
limit what is measured; prints the completion rate from then (between 10 % and 90 % of the
jobs final) as a fraction of the bound, and how many requests the sandbox refused for the
mailbox concurrency limit (none, if the daemon keeps within it). The reference is 0.11 of
the bound before issue 9 (measured while the invoices were being posted). Never passes or
fails on time. PostgreSQL runs when MAILBOX_WORKER_TEST_POSTGRES_URL is set.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time

from _daemon import (
    JobStates,
    daemon_environment,
    database_kinds,
    follow,
    pdf_bytes,
    post_invoices,
    prepare,
    scratch_database,
    start_sandbox,
    work_directory,
)

REFERENCE_FRACTION = 0.11
PER_MAILBOX = 4
POSTING_LEAD = 3.0
ASSUMED_POST_RATE = 25.0
"""Jobs are due ``POSTING_LEAD`` seconds plus one second per ``ASSUMED_POST_RATE`` jobs after
posting starts (a slow machine's enqueue rate), all at once."""


async def run(kind: str, arguments: argparse.Namespace) -> dict[str, float]:
    pdf = pdf_bytes(10 * 1024)
    with work_directory() as work:
        sandbox = start_sandbox(work / "sandbox", arguments.mailboxes)
        try:
            async with scratch_database(kind, work) as url:
                extra = {
                    "MAILBOX_WORKER_WORKER__CONCURRENCY": str(arguments.concurrency),
                    "MAILBOX_WORKER_WORKER__PER_MAILBOX_CONCURRENCY": str(PER_MAILBOX),
                }
                daemon = daemon_environment(work, sandbox, url, extra)
                daemon.serve_arguments = arguments.serve.split()
                await daemon.start()
                states = JobStates(url)
                try:
                    await prepare(daemon, sandbox, arguments.mailboxes)
                    warm = await post_invoices(daemon, arguments.mailboxes, pdf)
                    await follow(states, 0, len(warm.job_ids), time.perf_counter(), 300)
                    rule = {"graph.sendMail": arguments.latency_ms}
                    await sandbox.control("/_sandbox/settings", {"latency": rule})
                    before = (await sandbox.control("/_sandbox/counters"))["counters"]
                    # Every job is scheduled for one moment after the last is posted, so that
                    # what is measured is the worker against the slow provider, not the rate
                    # at which the API takes invoices (benchmark b measures that).
                    lead = POSTING_LEAD + arguments.jobs / ASSUMED_POST_RATE
                    due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=lead)
                    posting_started = time.perf_counter()
                    await post_invoices(daemon, arguments.jobs, pdf, send_at=due)
                    posted_in = time.perf_counter() - posting_started
                    if posted_in >= lead:
                        print(
                            f"  (posting took {posted_in:.1f} s, past the {lead:.1f} s lead: "
                            "the figure includes the enqueue rate)"
                        )
                    await asyncio.sleep(max(0.0, lead - posted_in))
                    started = time.perf_counter()
                    progress = await follow(
                        states, len(warm.job_ids), arguments.jobs, started, 1800
                    )
                    after = (await sandbox.control("/_sandbox/counters"))["counters"]
                finally:
                    await states.close()
                    daemon.stop()
        finally:
            sandbox.stop()
    throttled = "graph.throttled.mailbox_concurrency"
    jobs = arguments.jobs
    return {
        "completion": progress.rate_between(jobs // 10, jobs * 9 // 10),
        "throttled": after.get(throttled, 0) - before.get(throttled, 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--mailboxes", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=80, help="the daemon's worker")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--databases", nargs="+", default=["postgres"])
    parser.add_argument("--serve", default="", help="more arguments of serve: '--workers 2'")
    arguments = parser.parse_args()
    slots = min(arguments.concurrency, arguments.mailboxes * PER_MAILBOX)
    bound = slots / (arguments.latency_ms / 1000)
    for kind in database_kinds(arguments.databases):
        figures = asyncio.run(run(kind, arguments))
        fraction = figures["completion"] / bound
        print(
            f"slow provider, {kind}, {arguments.latency_ms:.0f} ms per sendMail, "
            f"{arguments.mailboxes} mailboxes x {PER_MAILBOX}, concurrency "
            f"{arguments.concurrency}, {arguments.jobs} jobs: {figures['completion']:.0f} jobs/s "
            f"= {fraction:.2f} of the {bound:.0f} jobs/s bound "
            f"({fraction / REFERENCE_FRACTION:.2f} x the {REFERENCE_FRACTION} reference); "
            f"{figures['throttled']:.0f} requests refused for mailbox concurrency"
        )


if __name__ == "__main__":
    main()
