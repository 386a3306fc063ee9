"""Peak memory of the daemon with many large invoices queued (issue 9, benchmark e).

    .venv/bin/python bench/memory.py [--invoices 1000] [--size-mb 10] [--databases sqlite]
                                     [--hold SECONDS]

The sandbox answers no Graph call for an hour (its latency fault), so the worker holds at most
its concurrency in flight and every other invoice stays queued. Invoices are POSTed four at a
time; at checkpoints (10 %, 25 %, 50 %, 100 % of them queued) it prints the daemon process's
resident memory now (VmRSS) and its peak so far (VmHWM), from /proc. What should hold: the peak
does not grow with the number queued (the ratio of the last peak to the first checkpoint's
stays near 1). ``--hold`` keeps the daemon and its queue that long after the last POST and
samples every 30 s: past the daemon's 120 s Graph timeout, jobs end ``unknown`` while the
sandbox keeps their mailbox slots, and later attempts meet 429 and are queued again, so the
same slots are refilled over and over (docs/performance.md#memory). Never passes or fails.
Needs the disk for the invoices (about 1.4 x their size, base64 in the database). PostgreSQL
runs when MAILBOX_WORKER_TEST_POSTGRES_URL is set.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json

import aiohttp
from _daemon import (
    DaemonProcess,
    JobStates,
    daemon_environment,
    database_kinds,
    pdf_bytes,
    peak_rss_mb,
    prepare,
    rss_mb,
    scratch_database,
    start_sandbox,
    work_directory,
)

MAILBOXES = 4
POSTERS = 4
AN_HOUR_MS = 3_600_000
RETRIES = 30
HOLD_SAMPLE = 30.0


async def post_large(daemon: DaemonProcess, first: int, last: int, pdf_base64: str) -> None:
    """POST invoices ``first``..``last - 1``, each body built only when it is sent."""
    numbers = iter(range(first, last))
    headers = {**daemon.headers(), "Content-Type": "application/json"}

    async def poster(http: aiohttp.ClientSession) -> None:
        for number in numbers:
            body = {
                "mailbox_id": daemon.mailbox_ids[number % len(daemon.mailbox_ids)],
                "mode": "send",
                "message": {
                    "to": [{"address": "ap@fabrikam.example"}],
                    "subject": f"Invoice INV-{number:06d}",
                    "text": "Please find the invoice attached.",
                    "attachments": [
                        {
                            "filename": f"INV-{number:06d}.pdf",
                            "content_type": "application/pdf",
                            "content_base64": pdf_base64,
                        }
                    ],
                },
            }
            data = json.dumps(body)
            for _ in range(RETRIES):
                async with http.post(
                    f"{daemon.base_url}/v1/jobs", data=data, headers=headers
                ) as answer:
                    if answer.status == 202:
                        break
                    if answer.status != 503:  # 503: "try again shortly" (a busy database)
                        raise RuntimeError(f"refused: {answer.status} {await answer.text()}")
                await asyncio.sleep(1)
            else:
                raise RuntimeError(f"invoice {number} refused {RETRIES} times with 503")

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        await asyncio.gather(*(poster(http) for _ in range(POSTERS)))


async def run(
    kind: str, invoices: int, size_mb: float, hold: float
) -> list[tuple[int, str, float, float]]:
    pdf_base64 = base64.b64encode(pdf_bytes(int(size_mb * 1024 * 1024))).decode()
    checkpoints = sorted({max(1, invoices * share // 100) for share in (10, 25, 50, 100)})
    rows: list[tuple[int, str, float, float]] = []
    with work_directory() as work:
        sandbox = start_sandbox(work / "sandbox", MAILBOXES)
        try:
            async with scratch_database(kind, work) as url:
                extra = {
                    "MAILBOX_WORKER_WORKER__SHUTDOWN_GRACE": "1",
                    "MAILBOX_WORKER_SERVER__MAX_REQUEST_BYTES": str(64 * 1024 * 1024),
                }
                daemon = daemon_environment(work, sandbox, url, extra)
                await daemon.start()
                states = JobStates(url)
                try:
                    await prepare(daemon, sandbox, MAILBOXES, ("send", "draft"))
                    await sandbox.control("/_sandbox/settings", {"latency": {"*": AN_HOUR_MS}})
                    rows.append(
                        (0, "0 queued, 0 running", rss_mb(daemon.pid), peak_rss_mb(daemon.pid))
                    )
                    posted = 0
                    for checkpoint in checkpoints:
                        await post_large(daemon, posted, checkpoint, pdf_base64)
                        posted = checkpoint
                        counts = await states.counts()
                        waiting = (
                            f"{counts.get('queued', 0)} queued, {counts.get('running', 0)} running"
                        )
                        rows.append((posted, waiting, rss_mb(daemon.pid), peak_rss_mb(daemon.pid)))
                    held = 0.0
                    while held < hold:
                        step = min(HOLD_SAMPLE, hold - held)
                        await asyncio.sleep(step)
                        held += step
                        counts = await states.counts()
                        waiting = f"after {held:.0f} s: " + ", ".join(
                            f"{count} {state}" for state, count in sorted(counts.items())
                        )
                        rows.append((posted, waiting, rss_mb(daemon.pid), peak_rss_mb(daemon.pid)))
                finally:
                    await states.close()
                    daemon.stop()
        finally:
            sandbox.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--invoices", type=int, default=1000)
    parser.add_argument("--size-mb", type=float, default=10.0)
    parser.add_argument("--databases", nargs="+", default=["sqlite"])
    parser.add_argument(
        "--hold",
        type=float,
        default=0.0,
        help="seconds to keep the queue after the last POST, sampling every 30 s",
    )
    arguments = parser.parse_args()
    for kind in database_kinds(arguments.databases):
        rows = asyncio.run(run(kind, arguments.invoices, arguments.size_mb, arguments.hold))
        print(f"daemon memory, {kind}, {arguments.size_mb:g} MB invoices:")
        for posted, queued, now, peak in rows:
            print(f"  {posted:5d} posted ({queued}): RSS {now:7.0f} MiB, peak {peak:7.0f} MiB")
        first, last = rows[1][3], rows[-1][3]
        print(
            f"  peak at {rows[-1][0]} posted / peak at {rows[1][0]} posted: {last / first:.2f} "
            "(reference: 1.00, no growth)"
        )


if __name__ == "__main__":
    main()
