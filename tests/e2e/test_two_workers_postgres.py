"""Two daemon processes on one PostgreSQL database share the work and refresh a mailbox's
expired access token exactly once between them (the advisory lock around refresh)."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mailbox_worker.app import App
from mailbox_worker.config import load_settings
from mailbox_worker.demo import play_admin_consent
from mailbox_worker.sandbox import Sandbox

from .conftest import ADDRESS, Daemon, call, counters, second_daemon, start, workers_that_sent

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

JOBS = 50


async def expire_stored_access_token(environment: dict[str, str], mailbox_id: str) -> None:
    app = App.build(load_settings(environ=environment))
    try:
        stored = await app.vault.load_tokens(mailbox_id)
        assert stored is not None
        cache: dict[str, Any] = json.loads(stored.plaintext)
        for entry in cache["AccessToken"].values():
            entry["expires_on"] = entry["extended_expires_on"] = "1"
        await app.vault.store_tokens(
            mailbox_id, json.dumps(cache).encode(), expected_version=stored.version
        )
    finally:
        await app.close()


async def test_fifty_jobs_two_processes_one_refresh(
    daemon: Daemon, sandbox: Sandbox, postgres_url: str, tmp_path: Path
) -> None:
    daemon.environment.update(
        {
            "MAILBOX_WORKER_DATABASE__URL": postgres_url,
            # A load generator, not an invoicing app: one key enqueues and polls as fast as
            # it can. The API's rate limits are tested in test_api_rate_limits.py.
            "MAILBOX_WORKER_API__RATE_LIMIT_PER_SECOND": "0",
            "MAILBOX_WORKER_WORKER__PER_MAILBOX_CONCURRENCY": "2",
            "MAILBOX_WORKER_LOGGING__LEVEL": "INFO",
        }
    )
    other = second_daemon(daemon, tmp_path)
    account = daemon.cli("accounts", "create", "Contoso Ltd")
    api_key = daemon.cli("keys", "create", "--account", account)
    context = ssl.create_default_context(cafile=str(sandbox.ca_path))
    headers = {"Authorization": f"Bearer {api_key}"}
    await start(daemon)
    try:
        async with aiohttp.ClientSession(headers=headers) as http, aiohttp.ClientSession() as plain:
            status, created = await call(
                http,
                daemon,
                "POST",
                "/v1/mailboxes",
                json={"provider": "microsoft", "capabilities": ["send"], "login_hint": ADDRESS},
            )
            assert status == 201
            await play_admin_consent(plain, created["authorization_url"], ADDRESS, context)
            mailbox_id = created["mailbox"]["id"]
            # Stop the first daemon so that neither process holds the token in memory.
            assert daemon.process is not None
            daemon.process.send_signal(signal.SIGTERM)
            assert daemon.process.wait(timeout=60) == 0
            await expire_stored_access_token(daemon.environment, mailbox_id)
            before = (await counters(plain, sandbox, context)).get(
                "identity.token.refresh_token", 0
            )
            await asyncio.gather(start(daemon), start(other))

            body = {
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
                            "content_base64": base64.b64encode(b"%PDF-1.4 tiny").decode(),
                        }
                    ],
                },
            }
            jobs = []
            for number in range(JOBS):
                target = daemon if number % 2 else other
                status, job = await call(http, target, "POST", "/v1/jobs", json=body)
                assert status == 202
                jobs.append(job["id"])
            async with asyncio.timeout(120):
                while True:
                    states = [
                        (await call(http, daemon, "GET", f"/v1/jobs/{j}"))[1]["state"] for j in jobs
                    ]
                    if all(state in {"sent", "failed", "unknown"} for state in states):
                        break
                    await asyncio.sleep(0.2)
            assert states == ["sent"] * JOBS
            after = (await counters(plain, sandbox, context))["identity.token.refresh_token"]
            assert after - before == 1
            async with plain.get(f"{sandbox.base_url}/_sandbox/messages", ssl=context) as answer:
                assert len((await answer.json())["messages"]) == JOBS
    finally:
        for process in (daemon.process, other.process):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
    assert len(await workers_that_sent(daemon.environment)) == 2
