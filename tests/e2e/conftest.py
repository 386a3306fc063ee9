"""The daemon as a real process, for end-to-end tests: configuration, start, API calls.

The sandbox runs inside the test process (so tests can read what it issued); the daemon runs
as `mailbox-worker serve` in a subprocess configured only through MAILBOX_WORKER_* variables.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from mailbox_worker.app import App
from mailbox_worker.config import load_settings
from mailbox_worker.db.models import JobEvent
from mailbox_worker.demo import play_admin_consent
from mailbox_worker.sandbox import Sandbox
from tests.ports import NOT_LISTENING, free_port

from ..conftest import create_postgres_database, drop_postgres_database, require_postgres

CLI = [sys.executable, "-m", "mailbox_worker.cli"]
ADDRESS = "billing@contoso.example"


@dataclass
class Daemon:
    base_url: str
    environment: dict[str, str]
    log_path: Path
    database: Path
    process: subprocess.Popen[bytes] | None = None
    answers: list[bytes] = field(default_factory=list)

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*CLI, *args], env=self.environment, capture_output=True, check=True, timeout=60
        )
        with self.log_path.open("ab") as log:
            log.write(done.stderr)
        return done.stdout.decode().strip()


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    simulator = Sandbox(tmp_path / "sandbox")
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
def daemon(tmp_path: Path, sandbox: Sandbox) -> Daemon:
    port = free_port()
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("MAILBOX_WORKER_")
    }
    database = tmp_path / "daemon.db"
    environment.update(
        {
            "MAILBOX_WORKER_DATABASE__URL": f"sqlite+aiosqlite:///{database}",
            "MAILBOX_WORKER_SERVER__PORT": str(port),
            "MAILBOX_WORKER_SERVER__PUBLIC_URL": f"http://127.0.0.1:{port}",
            "MAILBOX_WORKER_WORKER__POLL_INTERVAL": "0.1",
            "MAILBOX_WORKER_KEYS__SOURCE": "file",
            "MAILBOX_WORKER_KEYS__FILE": str(tmp_path / "keys.json"),
            "MAILBOX_WORKER_KEYS__CREATE_IF_MISSING": "true",
            "MAILBOX_WORKER_MICROSOFT__CLIENT_ID": "sandbox-client",
            "MAILBOX_WORKER_MICROSOFT__CLIENT_SECRET": "sandbox-secret",
            "MAILBOX_WORKER_MICROSOFT__AUTHORITY": sandbox.authority_url(),
            "MAILBOX_WORKER_MICROSOFT__GRAPH_URL": sandbox.graph_url,
            "MAILBOX_WORKER_MICROSOFT__CA_FILE": str(sandbox.ca_path),
            "MAILBOX_WORKER_LOGGING__LEVEL": "DEBUG",
            # The sandbox does not simulate Exchange's 30 messages a minute, and tests sending
            # more than 30 jobs to a mailbox are not about it (the integration tests of
            # mailbox limits are): no per-minute limit here.
            "MAILBOX_WORKER_WORKER__MICROSOFT_RATE_PER_MINUTE": "0",
        }
    )
    return Daemon(f"http://127.0.0.1:{port}", environment, tmp_path / "daemon.log", database)


async def start(daemon: Daemon) -> None:
    with daemon.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
        daemon.process = subprocess.Popen(
            [*CLI, "serve"], env=daemon.environment, stdout=log, stderr=log
        )
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(60):
            while True:
                try:
                    async with http.get(f"{daemon.base_url}/readyz") as answer:
                        if answer.status == 200:
                            return
                except NOT_LISTENING:
                    pass
                assert daemon.process.poll() is None, daemon.log_path.read_text()
                await asyncio.sleep(0.1)


async def call(
    http: aiohttp.ClientSession, daemon: Daemon, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, daemon.base_url + path, **kwargs) as answer:
        body = await answer.read()
        daemon.answers.append(body)
        return answer.status, (await answer.json() if body else None)


# -- PostgreSQL and several daemons --------------------------------------------------------


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """An empty database of its own on the test PostgreSQL server, dropped afterwards."""
    require_postgres()
    url = await create_postgres_database()
    yield url
    await drop_postgres_database(url)


def second_daemon(first: Daemon, tmp_path: Path) -> Daemon:
    port = free_port()
    environment = {
        **first.environment,
        "MAILBOX_WORKER_SERVER__PORT": str(port),
        "MAILBOX_WORKER_SERVER__PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    return Daemon(
        f"http://127.0.0.1:{port}", environment, tmp_path / "daemon-2.log", first.database
    )


async def workers_that_sent(environment: dict[str, str]) -> set[str]:
    app = App.build(load_settings(environ=environment))
    try:
        async with app.sessions() as session:
            rows = await session.scalars(select(JobEvent.worker).where(JobEvent.to_state == "sent"))
            return {worker for worker in rows if worker}
    finally:
        await app.close()


async def counters(
    http: aiohttp.ClientSession, sandbox: Sandbox, context: ssl.SSLContext
) -> dict[str, int]:
    async with http.get(f"{sandbox.base_url}/_sandbox/counters", ssl=context) as answer:
        return dict((await answer.json())["counters"])


async def connect_mailbox(
    http: aiohttp.ClientSession,
    browser: aiohttp.ClientSession,
    daemon: Daemon,
    address: str,
    context: ssl.SSLContext,
    capabilities: tuple[str, ...] = ("send",),
) -> str:
    """A Microsoft mailbox created through the daemon's API (``http`` carries the API key)
    and consented to at the sandbox by ``browser``; returns its id."""
    status, created = await call(
        http,
        daemon,
        "POST",
        "/v1/mailboxes",
        json={"provider": "microsoft", "capabilities": list(capabilities), "login_hint": address},
    )
    assert status == 201, created
    await play_admin_consent(browser, created["authorization_url"], address, context)
    return str(created["mailbox"]["id"])
