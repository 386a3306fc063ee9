"""Two daemon processes of concurrency 8 reach PostgreSQL only through a PgBouncer in
transaction mode with 10 server connections (docs/architecture.md#pool-sizing), and every one
of 24 mailboxes starts with an expired access token: 200 invoices are each sent exactly once,
nothing fails, and each mailbox's grant is redeemed once between the two processes.

Run with ``-s`` to see the figures (elapsed time, jobs per second, refreshes).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy.engine import make_url

from mailbox_worker.sandbox import Sandbox
from tests.pgbouncer import running_pgbouncer, stats, through

from ..conftest import require_postgres
from .conftest import (
    Daemon,
    call,
    connect_mailbox,
    counters,
    second_daemon,
    start,
    workers_that_sent,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

SERVER_CONNECTIONS = 10
CONCURRENCY = 8
MAILBOXES = 24
JOBS = 200
REFRESH = "identity.token.refresh_token"
TERMINAL = {"sent", "failed", "unknown", "cancelled", "held"}


@pytest.fixture
def pgbouncer() -> Iterator[int]:
    require_postgres()
    with running_pgbouncer(SERVER_CONNECTIONS) as port:
        yield port


def invoice(mailbox_id: str, number: int) -> dict[str, Any]:
    pdf = base64.b64encode(f"%PDF-1.4 invoice {number}".encode()).decode()
    return {
        "mailbox_id": mailbox_id,
        "mode": "send",
        "message": {
            "to": [{"address": "ap@fabrikam.example"}],
            "subject": f"Invoice {number}",
            "text": "Attached.",
            "attachments": [
                {"filename": "i.pdf", "content_type": "application/pdf", "content_base64": pdf}
            ],
        },
    }


async def connect_in_own_browser(
    http: aiohttp.ClientSession, daemon: Daemon, address: str, context: ssl.SSLContext
) -> str:
    """``connect_mailbox`` with a browser of its own: concurrent consents share no cookies."""
    async with aiohttp.ClientSession() as browser:
        return await connect_mailbox(http, browser, daemon, address, context)


def all_running(daemons: tuple[Daemon, ...]) -> bool:
    return all(each.process is not None and each.process.poll() is None for each in daemons)


async def sandbox_settings(
    http: aiohttp.ClientSession, sandbox: Sandbox, context: ssl.SSLContext, **values: int
) -> None:
    async with http.post(f"{sandbox.base_url}/_sandbox/settings", json=values, ssl=context) as r:
        assert r.status == 200


async def test_two_daemons_through_pgbouncer_send_each_invoice_once(
    daemon: Daemon, sandbox: Sandbox, postgres_url: str, pgbouncer: int, tmp_path: Path
) -> None:
    daemon.environment.update(
        {
            "MAILBOX_WORKER_DATABASE__URL": through(postgres_url, pgbouncer),
            # A load generator, not an invoicing app: one key enqueues and polls as fast as
            # it can. The API's rate limits are tested in test_api_rate_limits.py.
            "MAILBOX_WORKER_API__RATE_LIMIT_PER_SECOND": "0",
            "MAILBOX_WORKER_DATABASE__TRANSACTION_POOLER": "true",
            "MAILBOX_WORKER_WORKER__CONCURRENCY": str(CONCURRENCY),
            # Two per mailbox in each process: together within Graph's 4, so no throttling.
            "MAILBOX_WORKER_WORKER__PER_MAILBOX_CONCURRENCY": "2",
            "MAILBOX_WORKER_LOGGING__LEVEL": "INFO",
        }
    )
    other = second_daemon(daemon, tmp_path)
    daemons = (daemon, other)
    account = daemon.cli("accounts", "create", "Contoso Ltd")
    api_key = daemon.cli("keys", "create", "--account", account)
    context = ssl.create_default_context(cafile=str(sandbox.ca_path))
    addresses = [f"invoices{number:02d}@contoso.example" for number in range(MAILBOXES)]
    for address in addresses:
        sandbox.state.add_user(address)
    statuses: list[int] = []
    try:
        await asyncio.gather(*(start(each) for each in daemons))
        headers = {"Authorization": f"Bearer {api_key}"}
        async with aiohttp.ClientSession(headers=headers) as http, aiohttp.ClientSession() as plain:
            # Grants whose access tokens expire at once: every mailbox's first send refreshes.
            await sandbox_settings(plain, sandbox, context, access_token_lifetime=1)
            mailbox_ids = await asyncio.gather(
                *(connect_in_own_browser(http, daemon, address, context) for address in addresses)
            )
            await sandbox_settings(plain, sandbox, context, access_token_lifetime=3599)
            before = (await counters(plain, sandbox, context)).get(REFRESH, 0)

            async def api(method: str, path: str, target: Daemon, **kwargs: Any) -> Any:
                status, body = await call(http, target, method, path, **kwargs)
                statuses.append(status)
                return status, body

            async def enqueue(number: int) -> dict[str, Any]:
                body = invoice(mailbox_ids[number % MAILBOXES], number)
                status, job = await api("POST", "/v1/jobs", daemons[number % 2], json=body)
                assert status == 202, job
                return dict(job)

            name = str(make_url(postgres_url).database)
            pooled_before = stats(pgbouncer, name)
            started = time.perf_counter()
            jobs = await asyncio.gather(*(enqueue(number) for number in range(JOBS)))
            states: dict[str, str] = {job["id"]: job["state"] for job in jobs}
            async with asyncio.timeout(60):
                # Cheaply (in-process) until the sandbox holds as many messages as jobs, so
                # that polling the API does not take the daemons' CPU; then until every job
                # reads terminal (the outcome is recorded after the send returns).
                while len(sandbox.state.messages()) < JOBS and all_running(daemons):
                    await asyncio.sleep(0.05)
                while pending := [j for j, state in states.items() if state not in TERMINAL]:
                    await asyncio.sleep(0.1)
                    answers = await asyncio.gather(
                        *(
                            api("GET", f"/v1/jobs/{j}", daemons[n % 2])
                            for n, j in enumerate(pending)
                        )
                    )
                    for job_id, (_, body) in zip(pending, answers, strict=True):
                        states[job_id] = body["state"]
            elapsed = time.perf_counter() - started
            pooled_after = stats(pgbouncer, name)
            refreshes = (await counters(plain, sandbox, context))[REFRESH] - before
            async with plain.get(f"{sandbox.base_url}/_sandbox/messages", ssl=context) as answer:
                messages = (await answer.json())["messages"]
    finally:
        for each in daemons:
            if each.process is not None and each.process.poll() is None:
                each.process.send_signal(signal.SIGTERM)
                each.process.wait(timeout=60)

    print(
        f"\n{JOBS} jobs over {MAILBOXES} mailboxes, 2 daemons x concurrency {CONCURRENCY} through "
        f"PgBouncer ({SERVER_CONNECTIONS} server connections): {elapsed:.2f} s, "
        f"{JOBS / elapsed:.1f} jobs/s, {refreshes} token refreshes, "
        f"{len(statuses)} API calls"
    )
    if pooled_before and pooled_after:
        transactions = pooled_after["total_xact_count"] - pooled_before["total_xact_count"]
        waited = pooled_after["total_wait_time"] - pooled_before["total_wait_time"]
        print(
            f"PgBouncer meanwhile (SHOW STATS): {transactions} transactions; clients waited "
            f"{waited / 1e6:.1f} s in all for a server connection"
        )
    assert collections.Counter(states.values()) == {"sent": JOBS}
    assert [status for status in statuses if status >= 500] == []
    # Each Message-ID delivered once, and each is one of this run's jobs.
    delivered = collections.Counter(message["internet_message_id"] for message in messages)
    assert delivered == {job["message_id"]: 1 for job in jobs}
    # The advisory lock lets one process redeem a mailbox's grant; the other, waiting on it,
    # reads the stored result and msal answers from it. Nothing else forces a refresh here.
    assert refreshes == MAILBOXES
    for each in daemons:
        log = each.log_path.read_text()
        assert [line for line in log.splitlines() if " ERROR " in line] == []
        assert "Traceback" not in log
        assert "database.pool_size" not in log  # the default pool covers concurrency 8
        assert "storage scrub failed" not in log  # its start-up scrub went through PgBouncer
        assert each.process is not None and each.process.returncode == 0
    assert len(await workers_that_sent(daemon.environment)) == 2
