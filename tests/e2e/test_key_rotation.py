"""`mailbox-worker keys rotate` while the daemon sends: no job lost, nothing under the old key."""

from __future__ import annotations

import asyncio
import base64
import signal
import ssl
import subprocess

import aiohttp
import pytest

from mailbox_worker.demo import play_admin_consent
from mailbox_worker.sandbox import Sandbox

from .conftest import ADDRESS, CLI, Daemon, call, start

pytestmark = pytest.mark.e2e


def key_rows(status: str) -> dict[str, list[str]]:
    """The key rows of `keys status` (after its header): key id -> its columns."""
    lines = status.splitlines()
    assert lines[0].startswith("KEY\tSTATE\t")
    return {line.split("\t")[0]: line.split("\t") for line in lines[1:] if "\t" in line}


def job_body(mailbox_id: str, number: int) -> dict[str, object]:
    return {
        "mailbox_id": mailbox_id,
        "mode": "send",
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


async def test_rotation_under_load(daemon: Daemon, sandbox: Sandbox) -> None:
    account = daemon.cli("accounts", "create", "Contoso Ltd")
    api_key = daemon.cli("keys", "create", "--account", account)
    await start(daemon)
    context = ssl.create_default_context(cafile=str(sandbox.ca_path))
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {api_key}"}) as http:
            status, created = await call(
                http,
                daemon,
                "POST",
                "/v1/mailboxes",
                json={"provider": "microsoft", "capabilities": ["send"], "login_hint": ADDRESS},
            )
            async with aiohttp.ClientSession() as browser:
                await play_admin_consent(browser, created["authorization_url"], ADDRESS, context)
            mailbox_id = created["mailbox"]["id"]
            [old_key] = key_rows(daemon.cli("keys", "status"))
            jobs = []
            for number in range(30):
                status, job = await call(
                    http, daemon, "POST", "/v1/jobs", json=job_body(mailbox_id, number)
                )
                assert status == 202
                jobs.append(job["id"])
                if number == 10:
                    rotation = await asyncio.to_thread(
                        subprocess.run,
                        [*CLI, "keys", "rotate"],
                        env=daemon.environment,
                        capture_output=True,
                        text=True,
                        timeout=60,
                        check=True,
                    )
            assert "re-wrapped 1 data keys" in rotation.stdout
            rows = key_rows(daemon.cli("keys", "status"))
            assert rows[old_key][1:2] + rows[old_key][4:5] == ["superseded", "0"]
            retired = daemon.cli("keys", "retire", "--id", old_key)
            assert f"retired {old_key}" in retired
            # after the old key is gone, the running daemon still reads the mailbox's tokens
            status, job = await call(
                http, daemon, "POST", "/v1/jobs", json=job_body(mailbox_id, 99)
            )
            jobs.append(job["id"])
            async with asyncio.timeout(60):
                while True:
                    states = [
                        (await call(http, daemon, "GET", f"/v1/jobs/{j}"))[1]["state"] for j in jobs
                    ]
                    if all(state in {"sent", "failed", "unknown"} for state in states):
                        break
                    await asyncio.sleep(0.1)
            assert states == ["sent"] * len(jobs)
    finally:
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=60) == 0
