"""``mailbox-worker serve``: one process of a role, or a supervisor of worker processes.

``serve --role all|api|worker`` runs that role in this process (``App.serve``). ``serve
--workers N`` starts N more processes of this same command with ``--role worker`` and
supervises them: the API (with ``--role all``) keeps running in this process, which migrates
the database before the first child starts; SIGTERM or SIGINT is forwarded to every child,
which drains as a lone worker does (``Worker.run``), and the command returns once all have
exited. A child that ends on its own is restarted after a backoff; if children keep ending
(``MAX_CRASHES`` within ``CRASH_WINDOW`` seconds) the supervisor stops everything and exits
1. Each child serves ``/healthz``, ``/readyz`` and its own ``/metrics`` on port
``server.port + 1 + i`` (docs/deploy.md#prometheus).

SQLite has one writer and its locks are in-process (``db/locks.py``): there, anything but one
``--role all`` process is refused (exit 2), as docs/deploy.md says.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.engine import make_url
from tenacity import wait_exponential
from tenacity.wait import wait_base

from mailbox_worker.app import ROLES, App, Role
from mailbox_worker.cli.collector import settle_after_startup
from mailbox_worker.config import Settings
from mailbox_worker.errors import ConfigError
from mailbox_worker.periodic import wait_seconds

log = logging.getLogger(__name__)

RESTART_BACKOFF = wait_exponential(multiplier=0.5, max=30.0)
"""Waits before restarting a child that ended, by how many ended in a row: 0.5 s, 1 s..."""
MAX_CRASHES = 5
CRASH_WINDOW = 60.0
"""More than ``MAX_CRASHES`` ends within ``CRASH_WINDOW`` seconds: the supervisor gives up."""
DATABASE_WAIT = 120.0
"""Seconds ``serve`` waits at start for a database it cannot reach yet, then exits 1."""
KILL_AFTER = 10.0
"""Seconds past the worker's shutdown grace before a child that has not exited is killed."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--role",
        choices=ROLES,
        default="all",
        help="what this process runs: all (default), api (the API and background loops), "
        "worker (the worker alone; serves only /healthz, /readyz, /metrics)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="also start N worker processes (--role worker) and supervise them; PostgreSQL only",
    )
    # Given by the supervisor to its children: a child whose parent is gone stops (drains).
    parser.add_argument("--supervised-by", type=int, default=None, help=argparse.SUPPRESS)


def check_arguments(args: argparse.Namespace, settings: Settings) -> None:
    """``ConfigError`` when the role and worker count cannot run on these settings."""
    workers: int = args.workers
    role: Role = args.role
    if workers < 0:
        raise ConfigError("--workers", "must be 0 or more")
    if workers and role == "api":
        raise ConfigError("--workers", "starts worker processes: not with --role api")
    sqlite = make_url(settings.database.url).get_backend_name() == "sqlite"
    if sqlite and (workers or role != "all"):
        raise ConfigError(
            "database.url",
            "is SQLite, which serves one process: run `serve` alone (--role all, no --workers); "
            "use PostgreSQL for separate API and worker processes",
        )


@dataclass(frozen=True)
class Child:
    """One supervised process: its number, command and environment."""

    number: int
    command: Sequence[str]
    environment: Mapping[str, str]


def worker_children(args: argparse.Namespace, settings: Settings) -> list[Child]:
    """The ``--workers`` children: this command with ``--role worker``, child ``i`` serving
    its operations endpoints on ``server.port + 1 + i``."""
    command = [sys.executable, "-m", "mailbox_worker.cli"]
    if args.config is not None:
        command += ["--config", str(args.config)]
    command += ["serve", "--role", "worker", "--supervised-by", str(os.getpid())]
    children = []
    for number in range(args.workers):
        environment = dict(os.environ)
        environment["MAILBOX_WORKER_SERVER__PORT"] = str(settings.server.port + 1 + number)
        children.append(Child(number, command, environment))
    return children


class Supervisor:
    """Keeps ``children`` running until ``stop`` is set, then stops them (see the module)."""

    def __init__(
        self,
        children: Sequence[Child],
        shutdown_grace: float,
        *,
        restart_backoff: wait_base = RESTART_BACKOFF,
        max_crashes: int = MAX_CRASHES,
    ) -> None:
        self._children = children
        self._kill_after = shutdown_grace + KILL_AFTER
        self._restart_backoff = restart_backoff
        self._max_crashes = max_crashes
        self._ends: deque[float] = deque()
        self.gave_up = False

    async def run(self, stop: asyncio.Event) -> None:
        """Return once every child has exited after ``stop``, or after giving up (then
        ``gave_up`` is set, and so is ``stop``)."""
        await asyncio.gather(*(self._keep(child, stop) for child in self._children))

    async def _keep(self, child: Child, stop: asyncio.Event) -> None:
        in_a_row = 0
        while not stop.is_set():
            process = await asyncio.create_subprocess_exec(
                *child.command, env=dict(child.environment)
            )
            log.info("worker process %d started (pid %d)", child.number, process.pid)
            started = time.monotonic()
            status = await self._until_exit_or_stop(process, stop)
            if stop.is_set():
                await self._stop(child, process)
                return
            # One that ran a while before it ended starts over from the shortest backoff.
            in_a_row = 1 if time.monotonic() - started > CRASH_WINDOW else in_a_row + 1
            log.error("worker process %d ended on its own (status %s)", child.number, status)
            if self._too_many_ends():
                log.error(
                    "worker processes keep ending (%d in %.0fs): stopping",
                    self._max_crashes + 1,
                    CRASH_WINDOW,
                )
                self.gave_up = True
                stop.set()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_seconds(self._restart_backoff, in_a_row))

    @staticmethod
    async def _until_exit_or_stop(
        process: asyncio.subprocess.Process, stop: asyncio.Event
    ) -> int | None:
        exited = asyncio.ensure_future(process.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([exited, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if exited.done():
            return exited.result()
        exited.cancel()
        return None

    async def _stop(self, child: Child, process: asyncio.subprocess.Process) -> None:
        """SIGTERM (the child drains), then SIGKILL if it outlives the grace period."""
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self._kill_after)
            except TimeoutError:
                log.error("worker process %d did not stop in time: killed", child.number)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        log.info("worker process %d stopped (status %s)", child.number, process.returncode)

    def _too_many_ends(self) -> bool:
        now = time.monotonic()
        self._ends.append(now)
        while self._ends and now - self._ends[0] > CRASH_WINDOW:
            self._ends.popleft()
        return len(self._ends) > self._max_crashes


ORPHAN_CHECK_INTERVAL = 1.0


async def _stop_when_orphaned(supervisor: int, stop: asyncio.Event) -> None:
    """Set ``stop`` once this process's parent is no longer ``supervisor`` (it died without
    stopping its children: a killed supervisor must not leave workers behind)."""
    while not stop.is_set():
        if os.getppid() != supervisor:
            log.warning("the supervisor (pid %d) is gone: stopping", supervisor)
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), ORPHAN_CHECK_INTERVAL)


async def serve(args: argparse.Namespace, settings: Settings, app: App) -> int:
    """Run ``args.role`` in this process and supervise ``args.workers`` worker processes
    until SIGTERM or SIGINT; the exit status (1 when the supervisor gave up)."""
    settle_after_startup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if not args.workers:
        watch = None
        if args.supervised_by is not None:
            watch = asyncio.create_task(_stop_when_orphaned(args.supervised_by, stop))
        try:
            await app.serve(stop, role=args.role)
        finally:
            if watch is not None:
                watch.cancel()
        return 0
    supervisor = Supervisor(worker_children(args, settings), settings.worker.shutdown_grace)
    supervising = asyncio.create_task(supervisor.run(stop), name="supervisor")
    try:
        if args.role == "all":
            # The children are the workers: this process serves the API and the other loops.
            await app.serve(stop, role="api")
        await supervising
    finally:
        stop.set()
        await supervising
    return 1 if supervisor.gave_up else 0
