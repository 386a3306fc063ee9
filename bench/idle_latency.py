"""Idle latency: from the POST /v1/jobs of one invoice to the provider receiving it, p50/p99.

The daemon runs as real ``mailbox-worker serve`` processes against the sandbox, which runs in
this process: the receipt time is taken when the sandbox stores the sent message, on the same
clock as the POST. Jobs go one at a time, each after the previous one was received and the
daemon had a moment to settle it, so each meets an idle daemon. Prints figures, and the
daemon's CPU per job over the timed jobs (its processes' user + system time, from /proc, the
pauses between jobs included); never passes or fails on time.

Below each line, where the time went (p50s on the same clock): the POST's answer (202), the
``sendMail`` request reaching the sandbox's handler, and the sandbox's own handling from there
until it stored the message (its checks and MIME parsing, not the daemon's).

    .venv/bin/python bench/idle_latency.py [--jobs 200] [--layouts all,split,floor]
        [--source /work/main] [--idle-mailboxes 0]

Layouts: ``all`` is one ``serve`` process (the intake wakes its worker in-process); ``split``
(PostgreSQL only) is a ``serve --role api`` process and a ``serve --role worker`` process,
which only a wake-up across processes (LISTEN/NOTIFY) or the poll brings together;
``split-poll`` is the same with the worker polling only (``worker.poll_interval``, 1 s by
default), as behind a transaction pooler; ``floor`` (PostgreSQL only) is
``bench/_floor_daemon.py`` in the daemon's place: the steps promise 1 requires between the
POST and the ``sendMail``, in a process that does nothing else, so a floor of the latency
this machine allows (docs/performance.md "Twelfth pass"). PostgreSQL
runs when MAILBOX_WORKER_TEST_POSTGRES_URL is set (a scratch database is created and
dropped). ``--source`` runs the daemon from another checkout (e.g. before a change; ``split``
needs ``serve --role``). ``--idle-mailboxes N`` adds N connected mailboxes with nothing queued
(copies of the timed one's row, inserted before the timing): every claim up to migration 0020
looked each connected mailbox up (docs/performance.md "Fourteenth pass").
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import asyncpg
from _daemon import cpu_seconds, free_port, wait_ready
from sqlalchemy import Table, insert, select, text
from sqlalchemy.engine import make_url

from mailbox_worker.config import DatabaseSettings
from mailbox_worker.db.engine import create_engine
from mailbox_worker.db.models import Mailbox
from mailbox_worker.demo import play_admin_consent
from mailbox_worker.sandbox import Sandbox
from mailbox_worker.sandbox.microsoft.state import DEFAULT_CLIENT_ID, AccessToken, StoredMessage

ADDRESS = "billing@contoso.example"
FLOOR_ADDRESS = "floor@contoso.example"
SETTLE = 0.05
"""Seconds left after each receipt, for the daemon to record the outcome before the next POST."""


def environment(url: str, sandbox: Sandbox, folder: Path, source: Path | None) -> dict[str, str]:
    values = {key: value for key, value in os.environ.items() if not key.startswith("MAILBOX_")}
    values.update(
        {
            "MAILBOX_WORKER_DATABASE__URL": url,
            "MAILBOX_WORKER_KEYS__SOURCE": "file",
            "MAILBOX_WORKER_KEYS__FILE": str(folder / "keys.json"),
            "MAILBOX_WORKER_KEYS__CREATE_IF_MISSING": "true",
            "MAILBOX_WORKER_MICROSOFT__CLIENT_ID": "sandbox-client",
            "MAILBOX_WORKER_MICROSOFT__CLIENT_SECRET": "sandbox-secret",
            "MAILBOX_WORKER_MICROSOFT__AUTHORITY": sandbox.authority_url(),
            "MAILBOX_WORKER_MICROSOFT__GRAPH_URL": sandbox.graph_url,
            "MAILBOX_WORKER_MICROSOFT__CA_FILE": str(sandbox.ca_path),
            "MAILBOX_WORKER_WORKER__MICROSOFT_RATE_PER_MINUTE": "0",
            "MAILBOX_WORKER_LOGGING__LEVEL": "WARNING",
        }
    )
    if source is not None:
        values["PYTHONPATH"] = str(source)
        # ``python -m`` puts the working directory ahead of ``PYTHONPATH``: run from this
        # checkout, the daemon would import this checkout's code whatever it says.
        values[SOURCE] = str(source)
    return values


SOURCE = "BENCH_DAEMON_SOURCE"
"""The environment's note of ``--source``, where the daemon's processes run."""


def cli(values: dict[str, str], *arguments: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mailbox_worker.cli", *arguments],
        env=values,
        cwd=values.get(SOURCE),
        capture_output=True,
        check=True,
        timeout=120,
    )
    return done.stdout.decode().strip()


@dataclass
class Measured:
    latencies: list[float]
    """Seconds from each POST to the sandbox storing the message."""
    cpu_per_job: float
    """The daemon's CPU seconds over the timed jobs, per job."""
    answered: list[float]
    """Seconds from each POST to its answer (the 202)."""
    arrived: list[float]
    """Seconds from each POST to its ``sendMail`` reaching the sandbox's handler."""


@dataclass
class Receipt:
    """What the sandbox saw of the current job: when its ``sendMail`` reached the handler
    (``arrived``, ``time.perf_counter``) and when the message was stored (``received``)."""

    received: asyncio.Event
    arrived: float | None = None

    def arrived_after(self, started: float) -> float:
        """Seconds from ``started`` to the ``sendMail``'s arrival (stored only after it)."""
        if self.arrived is None:
            raise RuntimeError("the message was stored without a sendMail reaching the sandbox")
        return self.arrived - started


async def stopped(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if the process has not ended within 60 s."""
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()


@asynccontextmanager
async def serving(
    values: dict[str, str], port: int, log: Path, *arguments: str, **extra: str
) -> AsyncIterator[tuple[str, int]]:
    """A ``serve`` process on ``port`` (``extra``: more environment), ready; its base URL
    and pid. SIGTERM at the end."""
    own = {
        **values,
        **extra,
        "MAILBOX_WORKER_SERVER__PORT": str(port),
        "MAILBOX_WORKER_SERVER__PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mailbox_worker.cli",
            "serve",
            *arguments,
            env=own,
            cwd=values.get(SOURCE),
            stdout=output,
            stderr=output,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base, lambda: process.returncode is not None, log)
        yield base, process.pid
    finally:
        await stopped(process)


@asynccontextmanager
async def floor_serving(
    url: str, sandbox: Sandbox, port: int, log: Path
) -> AsyncIterator[tuple[str, int, dict[str, Any]]]:
    """``bench/_floor_daemon.py`` on ``port``, ready: its base URL, pid and the body to POST.
    Its Graph token is minted in the sandbox for a user of its own (the daemon gets its own
    by consent and refresh, off the measured path)."""
    user = sandbox.state.add_user(FLOOR_ADDRESS, "Floor")
    token = f"floor-{uuid.uuid4().hex}"
    sandbox.state.access_tokens[token] = AccessToken(
        DEFAULT_CLIENT_ID, user.object_id, ["Mail.Send"], time.time() + 86_400
    )
    dsn = make_url(url).set(drivername="postgresql").render_as_string(False)
    arguments = [
        *("--dsn", dsn, "--port", str(port), "--graph", sandbox.graph_url),
        *("--ca", str(sandbox.ca_path)),
        *("--mailboxes", json.dumps({"floor": [FLOOR_ADDRESS, token]})),
    ]
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).with_name("_floor_daemon.py")),
            *arguments,
            stdout=output,
            stderr=output,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base, lambda: process.returncode is not None, log)
        yield base, process.pid, invoice("floor")
    finally:
        await stopped(process)


async def add_idle_mailboxes(url: str, mailbox_id: str, count: int) -> None:
    """``count`` connected copies of mailbox ``mailbox_id``'s row (not timed), then, on
    PostgreSQL, the tables' statistics, as autovacuum would gather them (nothing gathers
    SQLite's: the daemon never runs ``ANALYZE`` there)."""
    if not count:
        return
    engine = create_engine(DatabaseSettings(url=url))
    try:
        async with engine.begin() as connection:
            table = cast(Table, Mailbox.__table__)
            row = (await connection.execute(select(table).where(table.c.id == mailbox_id))).one()
            copies = [
                {**row._mapping, "id": f"mbx_idle{n}", "address": f"idle{n}@contoso.example"}
                for n in range(count)
            ]
            await connection.execute(insert(table), copies)
            if connection.dialect.name == "postgresql":
                await connection.execute(text("ANALYZE"))
    finally:
        await engine.dispose()


async def measure(
    url: str, layout: str, jobs: int, source: Path | None, idle_mailboxes: int = 0
) -> Measured:
    """Seconds from each POST to the sandbox storing the message, and the daemon's CPU."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        async with Sandbox(folder / "sandbox") as sandbox:
            receipt = Receipt(asyncio.Event())
            store, count = sandbox.state.store_message, sandbox.state.count

            def record(message: StoredMessage) -> None:
                store(message)
                receipt.received.set()

            def counted(operation: str) -> None:
                # Every Graph request is counted as it reaches its handler, before its body
                # is read (sandbox/microsoft/graph.py).
                if operation == "graph.sendMail" and receipt.arrived is None:
                    receipt.arrived = time.perf_counter()
                count(operation)

            sandbox.state.store_message = record  # type: ignore[method-assign]
            sandbox.state.count = counted  # type: ignore[method-assign]
            api_port = free_port()
            log = folder / "daemon.log"
            if layout == "floor":
                floor = floor_serving(url, sandbox, api_port, log)
                async with floor as (base, pid, body), aiohttp.ClientSession() as http:
                    return await timed(http, base, body, receipt, jobs, [pid])
            values = environment(url, sandbox, folder, source)

            async def idle(mailbox_id: str) -> None:
                await add_idle_mailboxes(url, mailbox_id, idle_mailboxes)

            account = cli(values, "accounts", "create", "Bench Ltd")
            api_key = cli(values, "keys", "create", "--account", account)
            split = layout.startswith("split")
            api_role = ("--role", "api") if split else ()
            # The transaction-pooler setting is what turns the listener off (and statement
            # caching with it): the worker then only polls, as behind PgBouncer.
            poll_only = {"MAILBOX_WORKER_DATABASE__TRANSACTION_POOLER": "true"}
            async with serving(values, api_port, log, *api_role) as (base, api_pid):
                if split:
                    extra = poll_only if layout == "split-poll" else {}
                    worker = serving(values, free_port(), log, "--role", "worker", **extra)
                    async with worker as (_, worker_pid):
                        pids = [api_pid, worker_pid]
                        return await post_one_by_one(
                            base, api_key, sandbox, receipt, jobs, pids, idle
                        )
                return await post_one_by_one(base, api_key, sandbox, receipt, jobs, [api_pid], idle)


async def post_one_by_one(
    base: str,
    api_key: str,
    sandbox: Sandbox,
    receipt: Receipt,
    jobs: int,
    pids: list[int],
    before: Callable[[str], Awaitable[None]],
) -> Measured:
    """Connect a mailbox, run ``before`` with its id, then time ``jobs`` invoices to it."""
    context = ssl.create_default_context(cafile=str(sandbox.ca_path))
    headers = {"Authorization": f"Bearer {api_key}"}
    async with aiohttp.ClientSession(headers=headers) as http, aiohttp.ClientSession() as plain:
        async with http.post(
            f"{base}/v1/mailboxes",
            json={"provider": "microsoft", "capabilities": ["send"], "login_hint": ADDRESS},
        ) as answer:
            created = await answer.json()
        await play_admin_consent(plain, created["authorization_url"], ADDRESS, context)
        await before(created["mailbox"]["id"])
        return await timed(http, base, invoice(created["mailbox"]["id"]), receipt, jobs, pids)


def invoice(mailbox_id: str) -> dict[str, Any]:
    """The body of each timed ``POST /v1/jobs``."""
    return {
        "mailbox_id": mailbox_id,
        "mode": "send",
        "message": {
            "to": [{"address": "ap@fabrikam.example"}],
            "subject": "Invoice",
            "text": "Attached.",
            "attachments": [
                {
                    "filename": "i.pdf",
                    "content_type": "application/pdf",
                    "content_base64": base64.b64encode(b"%PDF-1.4 " + b"x" * 2000).decode(),
                }
            ],
        },
    }


async def timed(
    http: aiohttp.ClientSession,
    base: str,
    body: dict[str, Any],
    receipt: Receipt,
    jobs: int,
    pids: list[int],
) -> Measured:
    """``jobs`` POSTs of ``body`` one at a time (after five that warm the daemon up), each
    after the previous one was received and ``SETTLE`` passed."""
    latencies, answered, arrived = [], [], []
    cpu_before = 0.0
    for number in range(jobs + 5):  # the first five warm the daemon up
        if number == 5:
            cpu_before = sum(cpu_seconds(pid) for pid in pids)
        receipt.received.clear()
        receipt.arrived = None
        started = time.perf_counter()
        async with http.post(f"{base}/v1/jobs", json=body) as answer:
            answered_at = time.perf_counter()
            if answer.status != 202:
                raise RuntimeError(f"enqueue answered {answer.status}: {await answer.text()}")
        async with asyncio.timeout(30):
            await receipt.received.wait()
        if number >= 5:
            latencies.append(time.perf_counter() - started)
            answered.append(answered_at - started)
            arrived.append(receipt.arrived_after(started))
        await asyncio.sleep(SETTLE)
    cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
    return Measured(latencies, cpu / jobs, answered, arrived)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def report(database: str, layout: str, measured: Measured) -> None:
    latencies = measured.latencies
    print(
        f"{database:10} {layout:6} jobs {len(latencies):4}  "
        f"p50 {percentile(latencies, 0.5) * 1000:7.1f} ms  "
        f"p99 {percentile(latencies, 0.99) * 1000:7.1f} ms  "
        f"mean {statistics.fmean(latencies) * 1000:7.1f} ms  "
        f"daemon CPU {measured.cpu_per_job * 1000:5.2f} ms/job"
    )
    handling = [total - arrived for total, arrived in zip(latencies, measured.arrived, strict=True)]
    print(
        f"{'':17} p50s: POST answered (202) {statistics.median(measured.answered) * 1000:.1f} ms, "
        f"sendMail at the sandbox {statistics.median(measured.arrived) * 1000:.1f} ms, "
        f"the sandbox's own handling until stored {statistics.median(handling) * 1000:.1f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--layouts", default="all,split,floor")
    parser.add_argument("--source", type=Path, default=None)
    parser.add_argument("--idle-mailboxes", type=int, default=0)
    args = parser.parse_args()
    idle = args.idle_mailboxes
    if idle:
        print(f"{idle} more connected mailboxes, idle")
    layouts = args.layouts.split(",")
    with tempfile.TemporaryDirectory() as scratch:
        if "all" in layouts:
            url = f"sqlite+aiosqlite:///{scratch}/bench.db"
            report("sqlite", "all", await measure(url, "all", args.jobs, args.source, idle))
    postgres = os.environ.get("MAILBOX_WORKER_TEST_POSTGRES_URL")
    if not postgres:
        print("postgresql: skipped (set MAILBOX_WORKER_TEST_POSTGRES_URL)")
        return
    admin = make_url(postgres).set(drivername="postgresql").render_as_string(False)
    for layout in layouts:
        name = f"bench_idle_{uuid.uuid4().hex[:8]}"
        connection = await asyncpg.connect(admin)
        await connection.execute(f'CREATE DATABASE "{name}"')
        try:
            url = make_url(postgres).set(database=name).render_as_string(False)
            measured = await measure(url, layout, args.jobs, args.source, idle)
            report("postgresql", layout, measured)
        finally:
            await connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            await connection.close()


if __name__ == "__main__":
    asyncio.run(main())
