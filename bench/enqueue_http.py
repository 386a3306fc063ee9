"""HTTP enqueue: requests a second to ``POST /v1/jobs`` and invoices a second to
``POST /v1/job-batches``, from one daemon process, on SQLite and (if configured) PostgreSQL.

Prints figures; never passes or fails on time. PostgreSQL runs when
MAILBOX_WORKER_TEST_POSTGRES_URL is set (a scratch database is created and dropped).

    .venv/bin/python bench/enqueue_http.py [--requests 2000] [--concurrency 32]
        [--batches 20] [--batch-size 500] [--batch-clients 4] [--pdf-bytes 10000]
        [--backend sqlite|postgresql] [--floor also|only|no]

The daemon is ``mailbox-worker serve`` in a subprocess (the API and its worker in one
process, as deployed today), configured through MAILBOX_WORKER_* variables, with the per-key
rate limit off (``api.rate_limit_per_second = 0``) and the default log level. Every job is
scheduled a day ahead (``send_at``), so the worker claims none: this measures the API. The
load comes from this process (aiohttp, ``--concurrency`` requests in flight) and shares the
machine's cores with the daemon. Batches are sent one at a time, then ``--batch-clients`` at a
time (an integrator with several batches ready need not wait for each answer), each run
``--batches`` batches of fresh invoices. A batch endpoint the daemon does not have (404) is
reported as such, so the same script measures an older checkout (run it with that
checkout's interpreter: ``/path/to/checkout/.venv/bin/python bench/enqueue_http.py``).

On PostgreSQL the same requests then go to the floor (line ``floor``): ``bench/_floor_daemon.py``,
which stores each body (each item of a batch, in one statement, once per idempotency key) once
it parsed as JSON and does nothing else (no key check, validation, body comparison on a
replay, mailbox state or limits; docs/performance.md "Twelfth pass"), in a scratch database of
its own.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from _daemon import (
    cpu_seconds,
    free_port,
    postgres_cpu_seconds,
    postgres_postmaster,
    wait_ready,
)
from sqlalchemy.engine import make_url

from mailbox_worker.config import DatabaseSettings
from mailbox_worker.db import migrate
from mailbox_worker.db.accounts import AccountStore
from mailbox_worker.db.engine import create_engine, create_session_factory
from mailbox_worker.db.mailboxes import MailboxStore

ADDRESS = "billing@contoso.example"
WARM_UP = 8
"""Requests sent before the measured ones (connections opened, caches filled)."""


async def prepare(url: str) -> tuple[str, str]:
    """Migrate the database; an account, its API key and a connected mailbox:
    ``(key, mailbox id)``."""
    engine = create_engine(DatabaseSettings(url=url))
    try:
        await migrate.upgrade(engine)
        sessions = create_session_factory(engine)
        accounts, mailboxes = AccountStore(sessions), MailboxStore(sessions)
        account = await accounts.create_account("bench")
        issued = await accounts.create_api_key(account.id, "bench", frozenset({"jobs:write"}))
        mailbox = await mailboxes.create(account.id, "microsoft", ["send"], actor="bench")
        await mailboxes.mark_connected(mailbox.id, ADDRESS, ["Mail.Send"])
        return issued.secret, mailbox.id
    finally:
        await engine.dispose()


@asynccontextmanager
async def daemon(url: str, scratch: Path) -> AsyncIterator[tuple[str, int]]:
    port = free_port()
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("MAILBOX_WORKER_")
    }
    environment.update(
        {
            "MAILBOX_WORKER_DATABASE__URL": url,
            "MAILBOX_WORKER_SERVER__PORT": str(port),
            "MAILBOX_WORKER_SERVER__PUBLIC_URL": f"http://127.0.0.1:{port}",
            "MAILBOX_WORKER_KEYS__SOURCE": "file",
            "MAILBOX_WORKER_KEYS__FILE": str(scratch / "keys.json"),
            "MAILBOX_WORKER_KEYS__CREATE_IF_MISSING": "true",
            "MAILBOX_WORKER_MICROSOFT__CLIENT_ID": "bench-client",
            "MAILBOX_WORKER_MICROSOFT__CLIENT_SECRET": "bench-secret",
            "MAILBOX_WORKER_API__RATE_LIMIT_PER_SECOND": "0",
        }
    )
    profile = os.environ.get("BENCH_PROFILE")  # a file: the daemon runs under cProfile
    command = [sys.executable] + (["-m", "cProfile", "-o", profile] if profile else [])
    with (scratch / "daemon.log").open("ab") as log:
        process = subprocess.Popen(  # noqa: ASYNC220 - started once, never awaited
            [*command, "-m", "mailbox_worker.cli", "serve"],
            env=environment,
            stdout=log,
            stderr=log,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base_url, lambda: process.poll() is not None, scratch / "daemon.log", 60)
        yield base_url, process.pid
    finally:
        process.send_signal(2)  # SIGINT: a clean stop (lets a profiler write its file)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def job_request(mailbox_id: str, pdf: str, number: int) -> dict[str, Any]:
    send_at = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    return {
        "mailbox_id": mailbox_id,
        "mode": "send",
        "reference": f"INV-{number}",
        "send_at": send_at,
        "message": {
            "to": [{"address": "accounts@fabrikam.example", "name": "Fabrikam Accounts"}],
            "subject": f"Invoice INV-{number}",
            "text": "Please find our invoice attached.",
            "attachments": [
                {
                    "filename": "invoice.pdf",
                    "content_type": "application/pdf",
                    "content_base64": pdf,
                }
            ],
        },
    }


async def single(
    base_url: str, key: str, mailbox_id: str, pdf: str, requests: int, concurrency: int
) -> dict[str, float]:
    latencies: list[float] = []
    numbers = iter(range(WARM_UP))
    headers = {"Authorization": f"Bearer {key}"}

    async def client(http: aiohttp.ClientSession) -> None:
        for number in numbers:
            body = job_request(mailbox_id, pdf, number)
            sent = {**headers, "Idempotency-Key": uuid.uuid4().hex}
            started = time.perf_counter()
            async with http.post(f"{base_url}/v1/jobs", json=body, headers=sent) as answer:
                await answer.read()
                if answer.status != 202:
                    raise RuntimeError(f"answered {answer.status}: {await answer.text()}")
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(client(http) for _ in range(4)))  # warm-up
        latencies.clear()
        numbers = iter(range(requests))
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "per_s": requests / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
    }


async def batched(
    base_url: str, key: str, mailbox_id: str, pdf: str, batches: int, size: int, clients: int
) -> dict[str, float] | None:
    """``batches`` batches of ``size`` invoices, ``clients`` of them in flight at a time. The
    bodies are encoded before the clock starts: the client's own JSON encoding (several MB a
    batch) is not the daemon's work, and on a small machine it would take the daemon's cores."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    first = uuid.uuid4().int % 10**9
    bodies = [
        json.dumps(
            {
                "items": [
                    {
                        **job_request(mailbox_id, pdf, first + batch * size + number),
                        "idempotency_key": uuid.uuid4().hex,
                    }
                    for number in range(size)
                ]
            }
        ).encode()
        for batch in range(batches)
    ]
    missing = False

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal missing
        while bodies and not missing:
            body = bodies.pop()
            async with http.post(
                f"{base_url}/v1/job-batches", data=body, headers=headers
            ) as answer:
                if answer.status in {404, 405}:  # no such route
                    missing = True
                    return
                results = (await answer.json())["items"]
                if answer.status != 200 or any(r["status"] != "created" for r in results):
                    raise RuntimeError(f"answered {answer.status}: {results[:1]}")

    async with aiohttp.ClientSession() as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return None if missing else {"per_s": batches * size / elapsed}


@asynccontextmanager
async def floor_daemon(url: str, scratch: Path) -> AsyncIterator[tuple[str, int]]:
    """``bench/_floor_daemon.py`` on PostgreSQL ``url`` (nothing to send: every job is due a
    day ahead), ready; its base URL and pid."""
    port = free_port()
    dsn = make_url(url).set(drivername="postgresql").render_as_string(False)
    script = Path(__file__).with_name("_floor_daemon.py")
    with (scratch / "floor.log").open("ab") as log:
        process = subprocess.Popen(  # noqa: ASYNC220 - started once, never awaited
            [sys.executable, str(script), "--dsn", dsn, "--port", str(port)],
            stdout=log,
            stderr=log,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base_url, lambda: process.poll() is not None, scratch / "floor.log", 60)
        yield base_url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def run(
    url: str, scratch: Path, args: argparse.Namespace, floor: bool = False
) -> dict[str, Any]:
    """The single POSTs then the batches, against the daemon or (``floor``) the floor."""
    key, mailbox_id = ("floor", "floor") if floor else await prepare(url)
    pdf = base64.b64encode(b"%PDF-1.4\n" + os.urandom(args.pdf_bytes)).decode()
    serving = floor_daemon(url, scratch) if floor else daemon(url, scratch)
    async with serving as (base_url, pid):
        before = cpu_seconds(pid)
        one = await single(base_url, key, mailbox_id, pdf, args.requests, args.concurrency)
        # The warm-up's requests are in the daemon's CPU time too.
        one["cpu_ms"] = 1000 * (cpu_seconds(pid) - before) / (args.requests + WARM_UP)
        many: dict[int, dict[str, float] | None] = {}
        postmaster = await postgres_postmaster(url) if url.startswith("postgresql") else None
        for clients in sorted({1, args.batch_clients}) if args.batches > 0 else []:
            before = cpu_seconds(pid)
            server_before = postgres_cpu_seconds(postmaster) if postmaster else 0.0
            many[clients] = figures = await batched(
                base_url, key, mailbox_id, pdf, args.batches, args.batch_size, clients
            )
            if figures is not None:
                invoices = args.batches * args.batch_size
                figures["cpu_ms"] = 1000 * (cpu_seconds(pid) - before) / invoices
                if postmaster:
                    server = postgres_cpu_seconds(postmaster) - server_before
                    figures["postgres_cpu_ms"] = 1000 * server / invoices
    return {"single": one, "batch": many}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--batch-clients", type=int, default=4)
    parser.add_argument("--pdf-bytes", type=int, default=10_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], action="append")
    parser.add_argument(
        "--floor",
        choices=["also", "only", "no"],
        default="also",
        help="on PostgreSQL, also (or only) measure bench/_floor_daemon.py the same way",
    )
    args = parser.parse_args()
    backends = args.backend or ["sqlite", "postgresql"]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        if "sqlite" in backends:
            results["sqlite"] = await run(f"sqlite+aiosqlite:///{scratch}/bench.db", scratch, args)
        postgres = os.environ.get("MAILBOX_WORKER_TEST_POSTGRES_URL")
        if postgres and "postgresql" in backends:
            import asyncpg

            admin = make_url(postgres).set(drivername="postgresql").render_as_string(False)
            connection = await asyncpg.connect(admin)
            try:
                # The floor in a database of its own: the server's CPU, read for both, must
                # not include the vacuum of the daemon's tables.
                for label in [
                    *(["postgresql"] if args.floor != "only" else []),
                    *(["floor"] if args.floor != "no" else []),
                ]:
                    name = f"mw_bench_{uuid.uuid4().hex[:8]}"
                    await connection.execute(f'CREATE DATABASE "{name}"')
                    try:
                        url = make_url(postgres).set(database=name).render_as_string(False)
                        results[label] = await run(url, scratch, args, floor=label == "floor")
                    finally:
                        await connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            finally:
                await connection.close()
    print(
        f"requests={args.requests} concurrency={args.concurrency} batches={args.batches}"
        f"x{args.batch_size} batch_clients=1,{args.batch_clients} pdf_bytes={args.pdf_bytes}"
        f" cores={os.cpu_count()}"
    )
    for backend, figures in results.items():
        one = figures["single"]
        line = (
            f"{backend:<11} POST /v1/jobs {one['per_s']:7.0f} req/s "
            f"(p50 {one['p50_ms']:.0f} ms, p99 {one['p99_ms']:.0f} ms, "
            f"daemon CPU {one['cpu_ms']:.1f} ms/req)   "
        )
        for clients, batch in figures["batch"].items():
            line += f"\n{'':<11} POST /v1/job-batches, {clients} in flight: " + (
                "not available"
                if batch is None
                else f"{batch['per_s']:7.0f} invoices/s "
                f"(daemon CPU {batch['cpu_ms']:.2f} ms/invoice, "
                + (
                    f"PostgreSQL's {batch['postgres_cpu_ms']:.2f}, "
                    if "postgres_cpu_ms" in batch
                    else ""
                )
                + f"{batch['per_s'] / one['per_s']:.1f} x single)"
            )
        print(line)


if __name__ == "__main__":
    asyncio.run(main())
