"""What the end-to-end benchmarks share: the sandbox and the daemon as real processes, their CPU
time and peak memory read from /proc, mailboxes connected through the daemon's API, invoices
posted and followed to their final state.

The sandbox runs in a process of its own (``python bench/_daemon.py sandbox``) so that neither
its CPU nor the load generator's is counted as the daemon's; the daemon is ``mailbox-worker
serve`` configured only through MAILBOX_WORKER_* variables, as in tests/e2e/conftest.py.

``python bench/_daemon.py sandbox --data-dir D [--users N] [--tokens]`` prints one JSON line
(``base_url``, ``ca``, ``pid`` and, with ``--tokens``, Graph access tokens minted in-process
for users ``bench00@contoso.example``...) and serves until SIGTERM; ``--profile FILE`` writes a
cProfile of the serving loop at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "mailbox_worker.cli"]
TICKS = os.sysconf("SC_CLK_TCK")
FINAL_STATES = frozenset({"sent", "failed", "unknown", "cancelled", "expired"})


def mailbox_address(number: int) -> str:
    """The sandbox user (and daemon mailbox) number ``number``."""
    return f"bench{number:02d}@contoso.example"


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (its own, not its children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


async def postgres_postmaster(url: str) -> int | None:
    """The pid of the PostgreSQL server behind ``url`` if it runs on this machine (its
    ``postmaster.pid`` readable here), else None."""
    import asyncpg

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        data_directory = await connection.fetchval("SELECT current_setting('data_directory')")
    except asyncpg.PostgresError:  # not allowed to read it: not ours to measure
        return None
    finally:
        await connection.close()
    try:
        return int((Path(data_directory) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def postgres_cpu_seconds(postmaster: int) -> float:
    """User + system CPU time so far of the PostgreSQL server whose postmaster is
    ``postmaster``: its own, its processes' now running (backends, checkpointer, WAL writer,
    autovacuum) and its processes' that have exited (the postmaster's reaped children's
    time). Read before and after a run, the database's share of the machine's cores."""
    fields = Path(f"/proc/{postmaster}/stat").read_text().rpartition(")")[2].split()
    # utime, stime, cutime, cstime (fields 14 to 17)
    total = sum(int(value) for value in fields[11:15]) / TICKS
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children")
    with contextlib.suppress(OSError):
        for child in children.read_text().split():
            with contextlib.suppress(OSError):
                total += cpu_seconds(int(child))
    return total


async def wait_ready(
    base_url: str, ended: Callable[[], bool], log: Path, limit: float = 120.0
) -> None:
    """Until ``base_url``'s ``/readyz`` answers 200 (``limit`` seconds at most); an error with
    ``log``'s tail if the process ends first (``ended()``)."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(limit):
        while True:
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with http.get(f"{base_url}/readyz") as answer:
                    if answer.status == 200:
                        return
            if ended():
                tail = (await asyncio.to_thread(log.read_text))[-4000:]
                raise RuntimeError(f"the process ended: {tail}")
            await asyncio.sleep(0.1)


def peak_rss_mb(pid: int) -> float:
    """The peak resident set size of process ``pid`` (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mb(pid: int) -> float:
    """The resident set size of process ``pid`` now (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def median(values: list[float]) -> float:
    """The median, or 0 for no values."""
    return statistics.median(values) if values else 0.0


def pdf_bytes(size: int) -> bytes:
    """A PDF-looking attachment of ``size`` bytes (incompressible filler)."""
    head = b"%PDF-1.4\n"
    return head + os.urandom(max(0, size - len(head)))


def invoice(mailbox_id: str, pdf: bytes, reference: str) -> dict[str, Any]:
    """The POST /v1/jobs body for one invoice."""
    return {
        "mailbox_id": mailbox_id,
        "mode": "send",
        "message": {
            "to": [{"address": "ap@fabrikam.example"}],
            "subject": f"Invoice {reference}",
            "text": "Please find the invoice attached.",
            "attachments": [
                {
                    "filename": f"{reference}.pdf",
                    "content_type": "application/pdf",
                    "content_base64": base64.b64encode(pdf).decode(),
                }
            ],
        },
    }


# -- the sandbox ---------------------------------------------------------------------------


@dataclass
class SandboxProcess:
    """A sandbox running in a child process."""

    process: subprocess.Popen[bytes]
    base_url: str
    ca: Path
    tokens: dict[str, str]

    @property
    def pid(self) -> int:
        return self.process.pid

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    async def control(self, path: str, document: dict[str, Any] | None = None) -> Any:
        """POST (with ``document``) or GET a ``/_sandbox/`` control."""
        async with aiohttp.ClientSession() as http:
            method = "GET" if document is None else "POST"
            async with http.request(
                method, f"{self.base_url}{path}", json=document, ssl=self.ssl_context()
            ) as answer:
                answer.raise_for_status()
                return await answer.json()

    def stop(self) -> None:
        """SIGTERM; SIGKILL if requests still held in a latency keep it past 10 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_sandbox(
    data_dir: Path, users: int, *, tokens: bool = False, profile: Path | None = None
) -> SandboxProcess:
    """Start ``python bench/_daemon.py sandbox`` and read its JSON line."""
    command = [sys.executable, str(Path(__file__)), "sandbox", "--data-dir", str(data_dir)]
    command += ["--users", str(users)]
    if tokens:
        command.append("--tokens")
    if profile is not None:
        command += ["--profile", str(profile)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=ROOT)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError("the sandbox process exited before it started")
    started = json.loads(line)
    return SandboxProcess(process, started["base_url"], Path(started["ca"]), started["tokens"])


async def _serve_sandbox(data_dir: Path, users: int, tokens: bool) -> None:
    from mailbox_worker.sandbox import Sandbox
    from mailbox_worker.sandbox.microsoft.state import DEFAULT_CLIENT_ID, AccessToken

    sandbox = Sandbox(data_dir)
    await sandbox.start()
    minted: dict[str, str] = {}
    for number in range(users):
        user = sandbox.state.add_user(mailbox_address(number), f"Bench {number:02d}")
        if tokens:
            value = f"bench-token-{number:02d}"
            sandbox.state.access_tokens[value] = AccessToken(
                DEFAULT_CLIENT_ID, user.object_id, ["Mail.Send"], time.time() + 86_400
            )
            minted[user.address] = value
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stopped.set)
    document = {
        "base_url": sandbox.base_url,
        "ca": str(sandbox.ca_path),
        "pid": os.getpid(),
        "tokens": minted,
    }
    print(json.dumps(document), flush=True)
    await stopped.wait()
    await sandbox.stop()


def _sandbox_main(arguments: argparse.Namespace) -> None:
    serving = _serve_sandbox(arguments.data_dir, arguments.users, arguments.tokens)
    if arguments.profile is None:
        asyncio.run(serving)
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(serving)
    finally:
        profiler.disable()
        profiler.dump_stats(str(arguments.profile))


# -- the daemon ----------------------------------------------------------------------------


@dataclass
class DaemonProcess:
    """``mailbox-worker serve`` in a child process, with its API key once ``prepare``d."""

    environment: dict[str, str]
    base_url: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    api_key: str = ""
    mailbox_ids: list[str] = field(default_factory=list)
    serve_arguments: list[str] = field(default_factory=list)
    """More arguments of ``serve`` (``--workers 2``...)."""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu_seconds(self) -> float:
        """CPU time of the daemon: its process and every worker process it started."""
        return sum(cpu_seconds(pid) for pid in self.pids())

    def peak_rss_mb(self) -> float:
        """The sum of the peak RSS of its processes (each process's own peak)."""
        return sum(peak_rss_mb(pid) for pid in self.pids())

    def pids(self) -> list[int]:
        """The ``serve`` process and its children (``serve --workers N``)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        found = [self.pid]
        with contextlib.suppress(OSError):
            found += [int(each) for each in children.read_text().split()]
        return found

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*CLI, *args], env=self.environment, capture_output=True, check=True, timeout=120
        )
        return done.stdout.decode().strip()

    def launch(self) -> None:
        """Start the process (``start`` also waits until it is ready)."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*CLI, "serve", *self.serve_arguments],
                env=self.environment,
                stdout=log,
                stderr=log,
            )

    async def start(self) -> None:
        """``launch``, then wait until ready; a process that is not ready within 120 s is
        stopped rather than left behind."""
        self.launch()
        try:
            await self._ready()
        except BaseException:
            self.stop()
            raise

    async def _ready(self) -> None:
        process = self.process
        assert process is not None
        await wait_ready(self.base_url, lambda: process.poll() is not None, self.log_path)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@dataclass
class FloorProcess(DaemonProcess):
    """``bench/_floor_daemon.py`` in the daemon's place (``end_to_end.py --floor``): the steps
    promise 1 requires per job and nothing else, so its CPU per job is a floor of the
    daemon's on this machine."""

    arguments: list[str] = field(default_factory=list)

    def launch(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).with_name("_floor_daemon.py")),
                    *self.arguments,
                ],
                stdout=log,
                stderr=log,
            )


def floor_environment(
    work: Path, sandbox: SandboxProcess, database_url: str, concurrency: int
) -> FloorProcess:
    """The floor's process on PostgreSQL ``database_url``: its mailboxes are the sandbox's
    users, named by address, each with the token the sandbox minted (``start_sandbox(...,
    tokens=True)``)."""
    from sqlalchemy.engine import make_url

    port = free_port()
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    mailboxes = {address: [address, token] for address, token in sandbox.tokens.items()}
    arguments = [
        *("--dsn", dsn, "--port", str(port), "--graph", f"{sandbox.base_url}/v1.0"),
        *("--ca", str(sandbox.ca), "--mailboxes", json.dumps(mailboxes)),
        *("--concurrency", str(concurrency)),
    ]
    floor = FloorProcess({}, f"http://127.0.0.1:{port}", work / "floor.log", arguments=arguments)
    floor.mailbox_ids = sorted(mailboxes)
    return floor


def daemon_environment(
    work: Path, sandbox: SandboxProcess, database_url: str, extra: dict[str, str]
) -> DaemonProcess:
    """The daemon's configuration: ``database_url``, the sandbox as Microsoft, ``extra``."""
    port = free_port()
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("MAILBOX_WORKER_")
    }
    environment.update(
        {
            "MAILBOX_WORKER_DATABASE__URL": database_url,
            "MAILBOX_WORKER_SERVER__PORT": str(port),
            "MAILBOX_WORKER_SERVER__PUBLIC_URL": f"http://127.0.0.1:{port}",
            "MAILBOX_WORKER_KEYS__SOURCE": "file",
            "MAILBOX_WORKER_KEYS__FILE": str(work / "keys.json"),
            "MAILBOX_WORKER_KEYS__CREATE_IF_MISSING": "true",
            "MAILBOX_WORKER_MICROSOFT__CLIENT_ID": "sandbox-client",
            "MAILBOX_WORKER_MICROSOFT__CLIENT_SECRET": "sandbox-secret",
            "MAILBOX_WORKER_MICROSOFT__AUTHORITY": f"{sandbox.base_url}/contoso",
            "MAILBOX_WORKER_MICROSOFT__GRAPH_URL": f"{sandbox.base_url}/v1.0",
            "MAILBOX_WORKER_MICROSOFT__CA_FILE": str(sandbox.ca),
            "MAILBOX_WORKER_LOGGING__LEVEL": "WARNING",
            "MAILBOX_WORKER_WORKER__MICROSOFT_RATE_PER_MINUTE": "0",
            # A benchmark measures the engine, not the API's per-key rate limit.
            "MAILBOX_WORKER_API__RATE_LIMIT_PER_SECOND": "0",
            **extra,
        }
    )
    return DaemonProcess(environment, f"http://127.0.0.1:{port}", work / "daemon.log")


async def prepare(
    daemon: DaemonProcess,
    sandbox: SandboxProcess,
    mailboxes: int,
    capabilities: tuple[str, ...] = ("send",),
) -> None:
    """An account, an API key and ``mailboxes`` Microsoft mailboxes consented at the sandbox
    (the daemon must be running)."""
    from mailbox_worker.demo import play_admin_consent

    account = daemon.cli("accounts", "create", "Bench Ltd")
    daemon.api_key = daemon.cli("keys", "create", "--account", account)
    context = sandbox.ssl_context()
    async with (
        aiohttp.ClientSession(headers=daemon.headers()) as http,
        aiohttp.ClientSession() as browser,
    ):
        for number in range(mailboxes):
            address = mailbox_address(number)
            body = {
                "provider": "microsoft",
                "capabilities": list(capabilities),
                "login_hint": address,
            }
            async with http.post(f"{daemon.base_url}/v1/mailboxes", json=body) as answer:
                created = await answer.json()
                if answer.status != 201:
                    raise RuntimeError(f"mailbox not created: {created}")
            await play_admin_consent(browser, created["authorization_url"], address, context)
            daemon.mailbox_ids.append(str(created["mailbox"]["id"]))


@dataclass
class Posted:
    """What posting invoices measured."""

    job_ids: list[str]
    seconds: float
    latencies: list[float]


async def post_invoices(
    daemon: DaemonProcess,
    count: int,
    pdf: bytes,
    concurrency: int = 16,
    send_at: dt.datetime | None = None,
) -> Posted:
    """POST ``count`` invoices round-robin over the daemon's mailboxes, ``concurrency`` at a
    time, each scheduled for ``send_at`` if given; the body of each is built before the clock
    starts."""
    bodies = []
    for n in range(count):
        body = invoice(daemon.mailbox_ids[n % len(daemon.mailbox_ids)], pdf, f"INV-{n:06d}")
        if send_at is not None:
            body["send_at"] = send_at.isoformat()
        bodies.append(json.dumps(body))
    job_ids: list[str] = []
    latencies: list[float] = []
    pending = iter(bodies)
    headers = {**daemon.headers(), "Content-Type": "application/json"}

    async def poster(http: aiohttp.ClientSession) -> None:
        for body in pending:
            began = time.perf_counter()
            async with http.post(f"{daemon.base_url}/v1/jobs", data=body) as answer:
                document = await answer.json()
                if answer.status != 202:
                    raise RuntimeError(f"enqueue refused: {answer.status} {document}")
            latencies.append(time.perf_counter() - began)
            job_ids.append(str(document["id"]))

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as http:
        started = time.perf_counter()
        await asyncio.gather(*(poster(http) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return Posted(job_ids, seconds, latencies)


class JobStates:
    """Counts the daemon's jobs by state straight from its database (so that following them
    costs the daemon nothing)."""

    def __init__(self, database_url: str, table: str = "jobs") -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        self._engine = create_async_engine(database_url)
        self._table = table

    async def counts(self) -> dict[str, int]:
        from sqlalchemy import text

        async with self._engine.connect() as connection:
            query = f"SELECT state, count(*) FROM {self._table} GROUP BY state"  # noqa: S608
            rows = await connection.execute(text(query))
            return {str(state): int(count) for state, count in rows}

    async def final(self) -> int:
        counts = await self.counts()
        return sum(count for state, count in counts.items() if state in FINAL_STATES)

    async def close(self) -> None:
        await self._engine.dispose()


@dataclass
class Progress:
    """When each share of the jobs had become final: ``(seconds since start, final count)``."""

    samples: list[tuple[float, int]]

    def seconds_until(self, count: int) -> float:
        return next(at for at, done in self.samples if done >= count)

    def rate_between(self, low: int, high: int) -> float:
        """Jobs per second between the moments ``low`` and ``high`` jobs were final."""
        began, ended = self.seconds_until(low), self.seconds_until(high)
        return (high - low) / (ended - began) if ended > began else float("inf")


async def follow(
    states: JobStates, baseline: int, total: int, started: float, limit: float
) -> Progress:
    """Sample the final count (beyond ``baseline``) every 50 ms until ``total`` are final or
    ``limit`` seconds have passed since ``started`` (``time.perf_counter``)."""
    samples: list[tuple[float, int]] = []
    while True:
        done = await states.final() - baseline
        now = time.perf_counter() - started
        samples.append((now, done))
        if done >= total:
            return Progress(samples)
        if now > limit:
            raise RuntimeError(f"only {done} of {total} jobs final after {limit:.0f} s")
        await asyncio.sleep(0.05)


async def wait_for_final(daemon: DaemonProcess, job_ids: list[str], limit: float) -> dict[str, int]:
    """Poll the daemon until every job is final (or ``limit`` seconds); states by count."""
    states: dict[str, str] = {}
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession(headers=daemon.headers()) as http:
        while time.monotonic() < deadline:
            for job_id in job_ids:
                if states.get(job_id) in FINAL_STATES:
                    continue
                async with http.get(f"{daemon.base_url}/v1/jobs/{job_id}") as answer:
                    states[job_id] = str((await answer.json())["state"])
                if states[job_id] not in FINAL_STATES:
                    break
            if len(states) == len(job_ids) and all(s in FINAL_STATES for s in states.values()):
                break
            await asyncio.sleep(0.2)
    tally: dict[str, int] = {}
    for state in states.values():
        tally[state] = tally.get(state, 0) + 1
    return tally


# -- PostgreSQL ----------------------------------------------------------------------------


def postgres_url() -> str | None:
    """MAILBOX_WORKER_TEST_POSTGRES_URL, as the tests read it (None: skip PostgreSQL)."""
    return os.environ.get("MAILBOX_WORKER_TEST_POSTGRES_URL") or None


@contextlib.asynccontextmanager
async def scratch_database(kind: str, work: Path) -> AsyncIterator[str]:
    """An empty database: a SQLite file under ``work``, or a PostgreSQL database created on
    the server of MAILBOX_WORKER_TEST_POSTGRES_URL and dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{work / 'bench.db'}"
        return
    import uuid

    import asyncpg

    base = postgres_url()
    assert base is not None
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin_dsn = base.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(admin_dsn)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    try:
        yield base.rsplit("/", 1)[0] + f"/{name}"
    finally:
        connection = await asyncpg.connect(admin_dsn)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


def database_kinds(requested: list[str]) -> Iterator[str]:
    """``requested`` (sqlite, postgres), leaving out PostgreSQL when it is not configured."""
    for kind in requested:
        if kind == "postgres" and postgres_url() is None:
            print("postgres: skipped (set MAILBOX_WORKER_TEST_POSTGRES_URL)")
            continue
        yield kind


@contextlib.contextmanager
def work_directory() -> Iterator[Path]:
    """A scratch directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="mw-bench-") as name:
        yield Path(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    sandbox = commands.add_parser("sandbox", help="run a sandbox for a benchmark")
    sandbox.add_argument("--data-dir", type=Path, required=True)
    sandbox.add_argument("--users", type=int, default=20)
    sandbox.add_argument("--tokens", action="store_true")
    sandbox.add_argument("--profile", type=Path)
    arguments = parser.parse_args()
    _sandbox_main(arguments)


if __name__ == "__main__":
    main()
