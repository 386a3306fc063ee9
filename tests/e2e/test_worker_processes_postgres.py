"""Roles and worker processes on PostgreSQL: ``serve --workers 2`` shares the jobs between
two supervised worker processes, woken by the enqueue's NOTIFY, each job sent exactly once,
and SIGTERM drains them all;
``--role api`` processes no job and ``--role worker`` serves no API."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import ssl
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mailbox_worker.sandbox import Sandbox
from tests.ports import NOT_LISTENING

from .conftest import (
    ADDRESS,
    CLI,
    Daemon,
    call,
    connect_mailbox,
    second_daemon,
    workers_that_sent,
)

pytestmark = pytest.mark.e2e

JOBS = 40
FINAL = {"sent", "failed", "unknown", "cancelled"}


def job_body(mailbox_id: str, number: int) -> dict[str, Any]:
    return {
        "mailbox_id": mailbox_id,
        "mode": "send",
        "reference": f"INV-{number}",
        "message": {
            "to": [{"address": "ap@fabrikam.example"}],
            "subject": f"Invoice {number}",
            "text": "Attached.",
            "attachments": [
                {
                    "filename": "i.pdf",
                    "content_type": "application/pdf",
                    "content_base64": base64.b64encode(b"%PDF-1.4 tiny").decode(),
                }
            ],
        },
    }


async def start_serving(daemon: Daemon, *arguments: str, ready_urls: list[str]) -> None:
    """``serve`` with ``arguments``, until every URL of ``ready_urls`` answers 200."""
    with daemon.log_path.open("ab") as log:
        daemon.process = subprocess.Popen(
            [*CLI, "serve", *arguments], env=daemon.environment, stdout=log, stderr=log
        )
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(60):
            for url in ready_urls:
                while True:
                    try:
                        async with http.get(url) as answer:
                            if answer.status == 200:
                                break
                    except NOT_LISTENING:
                        pass
                    assert daemon.process.poll() is None, daemon.log_path.read_text()
                    await asyncio.sleep(0.1)


def stop(daemon: Daemon) -> int:
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGTERM)
    return daemon.process.wait(timeout=90)


def children_of(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(child) for child in path.read_text().split()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def pid_of(worker: str) -> int:
    """The process id in a worker's name (``host:pid:random``)."""
    return int(worker.split(":")[1])


async def wait_final(http: aiohttp.ClientSession, daemon: Daemon, jobs: list[str]) -> list[str]:
    async with asyncio.timeout(120):
        while True:
            states = [(await call(http, daemon, "GET", f"/v1/jobs/{j}"))[1]["state"] for j in jobs]
            if all(state in FINAL for state in states):
                return states
            await asyncio.sleep(0.2)


async def sent_messages(plain: aiohttp.ClientSession, sandbox: Sandbox) -> list[dict[str, Any]]:
    context = ssl.create_default_context(cafile=str(sandbox.ca_path))
    async with plain.get(f"{sandbox.base_url}/_sandbox/messages", ssl=context) as answer:
        return list((await answer.json())["messages"])


def port_of(daemon: Daemon) -> int:
    return int(daemon.environment["MAILBOX_WORKER_SERVER__PORT"])


@pytest.mark.postgres
async def test_two_worker_processes_share_the_jobs_and_drain_on_sigterm(
    daemon: Daemon, sandbox: Sandbox, postgres_url: str
) -> None:
    daemon.environment.update(
        {
            "MAILBOX_WORKER_DATABASE__URL": postgres_url,
            "MAILBOX_WORKER_LOGGING__LEVEL": "INFO",
            # Longer than the test may take: only the enqueue's NOTIFY wakes the workers.
            "MAILBOX_WORKER_WORKER__POLL_INTERVAL": "600",
        }
    )
    account = daemon.cli("accounts", "create", "Contoso Ltd")
    api_key = daemon.cli("keys", "create", "--account", account)
    context = ssl.create_default_context(cafile=str(sandbox.ca_path))
    port = port_of(daemon)
    worker_urls = [f"http://127.0.0.1:{port + 1 + i}/readyz" for i in range(2)]
    await start_serving(
        daemon, "--workers", "2", ready_urls=[f"{daemon.base_url}/readyz", *worker_urls]
    )
    assert daemon.process is not None
    supervisor = daemon.process.pid
    children = children_of(supervisor)
    assert len(children) == 2
    try:
        headers = {"Authorization": f"Bearer {api_key}"}
        async with aiohttp.ClientSession(headers=headers) as http, aiohttp.ClientSession() as plain:
            mailbox_id = await connect_mailbox(http, plain, daemon, ADDRESS, context)
            jobs = []
            for number in range(JOBS):
                status, job = await call(
                    http, daemon, "POST", "/v1/jobs", json=job_body(mailbox_id, number)
                )
                assert status == 202, job
                jobs.append(job["id"])
            assert await wait_final(http, daemon, jobs) == ["sent"] * JOBS
            messages = await sent_messages(plain, sandbox)
            subjects = Counter(message["subject"] for message in messages)
            assert subjects == Counter(f"Invoice {number}" for number in range(JOBS))
            # A worker process serves its own metrics and nothing of the API.
            async with plain.get(f"http://127.0.0.1:{port + 1}/metrics") as answer:
                assert answer.status == 200
                assert (
                    'mailbox_worker_loop_last_success_timestamp_seconds{loop="worker"}'
                    in await answer.text()
                )
            async with plain.get(f"http://127.0.0.1:{port + 1}/v1/jobs/{jobs[0]}") as answer:
                assert answer.status == 404
    finally:
        status = stop(daemon)
    assert status == 0, daemon.log_path.read_text()
    # Both children did some of the work, the supervisor (the API) none of it.
    senders = {pid_of(worker) for worker in await workers_that_sent(daemon.environment)}
    assert senders == children
    assert not any(alive(child) for child in children)


@pytest.mark.postgres
async def test_api_role_processes_nothing_worker_role_serves_no_api(
    daemon: Daemon, sandbox: Sandbox, postgres_url: str, tmp_path: Path
) -> None:
    daemon.environment.update(
        {"MAILBOX_WORKER_DATABASE__URL": postgres_url, "MAILBOX_WORKER_LOGGING__LEVEL": "INFO"}
    )
    worker = second_daemon(daemon, tmp_path)
    account = daemon.cli("accounts", "create", "Contoso Ltd")
    api_key = daemon.cli("keys", "create", "--account", account)
    context = ssl.create_default_context(cafile=str(sandbox.ca_path))
    await start_serving(daemon, "--role", "api", ready_urls=[f"{daemon.base_url}/readyz"])
    try:
        headers = {"Authorization": f"Bearer {api_key}"}
        async with aiohttp.ClientSession(headers=headers) as http, aiohttp.ClientSession() as plain:
            mailbox_id = await connect_mailbox(http, plain, daemon, ADDRESS, context)
            status, job = await call(http, daemon, "POST", "/v1/jobs", json=job_body(mailbox_id, 1))
            assert status == 202, job
            await start_serving(
                worker, "--role", "worker", ready_urls=[f"{worker.base_url}/readyz"]
            )
            assert worker.process is not None
            assert await wait_final(http, daemon, [job["id"]]) == ["sent"]
            status, answer = await call(http, worker, "GET", f"/v1/jobs/{job['id']}")
            assert status == 404, answer
            status, answer = await call(
                http, worker, "POST", "/v1/jobs", json=job_body(mailbox_id, 2)
            )
            assert status == 404, answer
            async with plain.get(f"{worker.base_url}/healthz") as health:
                assert health.status == 200
            worker_pid = worker.process.pid
        assert stop(worker) == 0
    finally:
        assert stop(daemon) == 0
    # The job went out through the worker process, not the API process that took it.
    assert {pid_of(name) for name in await workers_that_sent(daemon.environment)} == {worker_pid}


def test_sqlite_refuses_separate_processes(daemon: Daemon) -> None:
    for arguments in (["--workers", "2"], ["--role", "worker"]):
        done = subprocess.run(
            [*CLI, "serve", *arguments],
            env=daemon.environment,
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 2
        assert b"SQLite" in done.stderr


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit is reaped by whoever adopted it)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.postgres
async def test_worker_processes_stop_when_their_supervisor_is_killed(
    daemon: Daemon, postgres_url: str
) -> None:
    daemon.environment["MAILBOX_WORKER_DATABASE__URL"] = postgres_url
    child_url = f"http://127.0.0.1:{port_of(daemon) + 1}/readyz"
    await start_serving(daemon, "--role", "worker", "--workers", "1", ready_urls=[child_url])
    assert daemon.process is not None
    (child,) = children_of(daemon.process.pid)
    daemon.process.kill()
    daemon.process.wait(timeout=30)
    async with asyncio.timeout(60):
        while running(child):
            await asyncio.sleep(0.1)
