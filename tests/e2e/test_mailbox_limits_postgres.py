"""Mailbox limits held across processes: two daemons on one PostgreSQL database never send
more than a mailbox's 4 concurrent requests, and a 429 on one mailbox pauses only that one."""

from __future__ import annotations

import asyncio
import signal
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mailbox_worker.app import App
from mailbox_worker.config import load_settings
from mailbox_worker.db.models import Mailbox
from mailbox_worker.sandbox import Sandbox

from .conftest import Daemon, call, connect_mailbox, counters, second_daemon, start

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

BUSY = "billing@contoso.example"
THROTTLED = "accounts@contoso.example"
JOBS = 60
SLOW_REQUEST = 0.2  # seconds the sandbox holds each send: requests overlap
FINAL = {"sent", "failed", "unknown"}


def job_body(mailbox_id: str, number: int) -> dict[str, Any]:
    return {
        "mailbox_id": mailbox_id,
        "mode": "send",
        "message": {
            "to": [{"address": "ap@fabrikam.example"}],
            "subject": f"Invoice {number}",
            "text": "Attached.",
        },
    }


async def sandbox_post(
    plain: aiohttp.ClientSession, sandbox: Sandbox, context: ssl.SSLContext, path: str, body: Any
) -> None:
    async with plain.post(f"{sandbox.base_url}{path}", json=body, ssl=context) as answer:
        assert answer.status in {200, 201}, await answer.text()


async def until_final(http: aiohttp.ClientSession, daemon: Daemon, jobs: list[str]) -> list[str]:
    async with asyncio.timeout(180):  # a hang guard, not a performance assertion
        while True:
            states = [(await call(http, daemon, "GET", f"/v1/jobs/{j}"))[1]["state"] for j in jobs]
            if all(state in FINAL for state in states):
                return states
            await asyncio.sleep(0.2)


async def throttled_pauses(plain: aiohttp.ClientSession, daemon: Daemon) -> float:
    async with plain.get(f"{daemon.base_url}/metrics") as answer:
        page = await answer.text()
    prefix = 'mailbox_worker_mailbox_pauses_total{reason="throttled"} '
    return sum(float(line[len(prefix) :]) for line in page.splitlines() if line.startswith(prefix))


async def stored_mailbox(environment: dict[str, str], mailbox_id: str) -> Mailbox:
    app = App.build(load_settings(environ=environment))
    try:
        async with app.sessions() as session:
            mailbox = await session.get(Mailbox, mailbox_id)
            assert mailbox is not None
            return mailbox
    finally:
        await app.close()


async def test_two_daemons_hold_a_mailboxs_limits_and_a_429_pauses_only_its_mailbox(
    daemon: Daemon, sandbox: Sandbox, postgres_url: str, tmp_path: Path
) -> None:
    daemon.environment.update(
        {
            "MAILBOX_WORKER_DATABASE__URL": postgres_url,
            # A load generator, not an invoicing app: one key enqueues and polls as fast as
            # it can. The API's rate limits are tested in test_api_rate_limits.py.
            "MAILBOX_WORKER_API__RATE_LIMIT_PER_SECOND": "0",
            "MAILBOX_WORKER_LOGGING__LEVEL": "INFO",
            # Each process could run 8 at once: only the shared claim keeps a mailbox at 4.
            "MAILBOX_WORKER_WORKER__CONCURRENCY": "8",
        }
    )
    other = second_daemon(daemon, tmp_path)
    account = daemon.cli("accounts", "create", "Contoso Ltd")
    api_key = daemon.cli("keys", "create", "--account", account)
    context = ssl.create_default_context(cafile=str(sandbox.ca_path))
    headers = {"Authorization": f"Bearer {api_key}"}
    await asyncio.gather(start(daemon), start(other))
    try:
        async with aiohttp.ClientSession(headers=headers) as http, aiohttp.ClientSession() as plain:
            busy = await connect_mailbox(http, plain, daemon, BUSY, context)
            throttled = await connect_mailbox(http, plain, daemon, THROTTLED, context)

            # 1. Sixty slow sends to one mailbox through two processes of 8 slots each.
            await sandbox_post(
                plain,
                sandbox,
                context,
                "/_sandbox/faults",
                {
                    "operation": "graph.sendMail",
                    "kind": "delay",
                    "delay": SLOW_REQUEST,
                    "times": JOBS,
                },
            )
            started = time.perf_counter()
            jobs = []
            for number in range(JOBS):
                target = daemon if number % 2 else other
                status, job = await call(
                    http, target, "POST", "/v1/jobs", json=job_body(busy, number)
                )
                assert status == 202
                jobs.append(job["id"])
            assert await until_final(http, daemon, jobs) == ["sent"] * JOBS
            elapsed = time.perf_counter() - started
            async with plain.get(f"{sandbox.base_url}/_sandbox/concurrency", ssl=context) as got:
                peaks = (await got.json())["peak_in_flight"]
            refused = (await counters(plain, sandbox, context)).get(
                "graph.throttled.mailbox_concurrency", 0
            )
            print(
                f"\n{JOBS} jobs, one mailbox, two daemons: peak in flight {peaks.get(BUSY)}, "
                f"concurrency 429s {refused}, {elapsed:.1f}s ({SLOW_REQUEST}s a request)"
            )
            assert peaks[BUSY] <= 4
            assert refused == 0

            # 2. The other mailbox answers 429 with an hour's Retry-After: it waits, this
            # mailbox's jobs keep completing meanwhile.
            await sandbox_post(
                plain, sandbox, context, "/_sandbox/settings", {"throttle_retry_after": 3600}
            )
            await sandbox_post(
                plain,
                sandbox,
                context,
                "/_sandbox/faults",
                {"operation": "graph.sendMail", "kind": "status", "status": 429},
            )
            status, held_back = await call(
                http, daemon, "POST", "/v1/jobs", json=job_body(throttled, 0)
            )
            assert status == 202
            async with asyncio.timeout(60):  # a hang guard, not a performance assertion
                while (await call(http, daemon, "GET", f"/v1/jobs/{held_back['id']}"))[1][
                    "last_error"
                ] is None:
                    await asyncio.sleep(0.1)
            started = time.perf_counter()
            more = []
            for number in range(20):
                target = daemon if number % 2 else other
                status, job = await call(
                    http, target, "POST", "/v1/jobs", json=job_body(busy, 100 + number)
                )
                assert status == 202
                more.append(job["id"])
            assert await until_final(http, daemon, more) == ["sent"] * 20
            flowing = time.perf_counter() - started
            _, waiting = await call(http, daemon, "GET", f"/v1/jobs/{held_back['id']}")
            paused = await stored_mailbox(daemon.environment, throttled)
            print(
                f"429 on {THROTTLED} (Retry-After 3600s): 20 jobs of {BUSY} sent in "
                f"{flowing:.1f}s meanwhile; the throttled job is {waiting['state']} "
                f"({waiting['last_error']['code']}), mailbox paused until {paused.paused_until}"
            )
            assert (waiting["state"], waiting["last_error"]["code"]) == ("queued", "throttled")
            assert (paused.pause_reason, paused.paused_until is not None) == ("throttled", True)
            pauses = [await throttled_pauses(plain, process) for process in (daemon, other)]
            assert sum(pauses) == 1  # one 429, one pause, counted by the daemon that got it
    finally:
        for process in (daemon.process, other.process):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
