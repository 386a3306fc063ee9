"""The daemon as a real process: CLI set-up, `serve`, the full path through the sandbox, SIGTERM.

The sandbox runs inside the test (so the test can read what it issued); the daemon runs as
`mailbox-worker serve` in a subprocess configured only through MAILBOX_WORKER_* variables.
After the run, every token the sandbox issued is searched for in the database files, the
daemon's logs and every API answer: none may appear. The daemon logs JSON lines
(``logging.json``), every one of which must parse, and names no mailbox address.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import ssl

import aiohttp
import pytest

from mailbox_worker.demo import play_admin_consent
from mailbox_worker.invoice_pdf import invoice_pdf
from mailbox_worker.sandbox import Sandbox

from .conftest import ADDRESS, Daemon, call, start

pytestmark = pytest.mark.e2e


def issued_secrets(sandbox: Sandbox) -> set[str]:
    """Every access token, refresh token and authorization code the sandbox handed out."""
    state = sandbox.state
    issued = [*state.codes, *state.refresh_tokens, *state.access_tokens]
    assert all(len(secret) >= 16 for secret in issued)
    return set(issued)


async def test_an_invoice_travels_from_the_api_to_the_mailbox(
    daemon: Daemon, sandbox: Sandbox
) -> None:
    daemon.environment["MAILBOX_WORKER_LOGGING__JSON"] = "true"
    account = daemon.cli("accounts", "create", "Contoso Ltd")
    api_key = daemon.cli("keys", "create", "--account", account)
    serve_log_starts = daemon.log_path.stat().st_size  # what `serve` writes comes after
    await start(daemon)
    assert daemon.process is not None
    headers = {"Authorization": f"Bearer {api_key}"}
    sandbox_ssl = ssl.create_default_context(cafile=str(sandbox.ca_path))
    pdf = invoice_pdf(["Invoice INV-7", "Amount 99.00 EUR"])
    try:
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            aiohttp.ClientSession() as browser,
        ):
            status, created = await call(
                http,
                daemon,
                "POST",
                "/v1/mailboxes",
                json={
                    "provider": "microsoft",
                    "capabilities": ["send", "draft"],
                    "login_hint": ADDRESS,
                },
            )
            assert status == 201, created
            await play_admin_consent(browser, created["authorization_url"], ADDRESS, sandbox_ssl)
            mailbox_id = created["mailbox"]["id"]
            status, mailbox = await call(http, daemon, "GET", f"/v1/mailboxes/{mailbox_id}")
            assert (mailbox["state"], mailbox["address"]) == ("connected", ADDRESS)

            jobs = []
            for number, mode in enumerate(["send", "draft", "send"]):
                body = {
                    "mailbox_id": mailbox_id,
                    "mode": mode,
                    "message": {
                        "to": [{"address": "ap@fabrikam.example"}],
                        "subject": f"Invoice INV-{number}",
                        "text": "Attached.",
                        "attachments": [
                            {
                                "filename": "INV.pdf",
                                "content_type": "application/pdf",
                                "content_base64": base64.b64encode(pdf).decode(),
                            }
                        ],
                    },
                }
                key = {"Idempotency-Key": f"inv-{number}"}
                status, job = await call(http, daemon, "POST", "/v1/jobs", json=body, headers=key)
                assert status == 202, job
                status, again = await call(http, daemon, "POST", "/v1/jobs", json=body, headers=key)
                assert (status, again["id"]) == (200, job["id"])
                jobs.append(job)

            async with asyncio.timeout(60):
                while True:
                    states = [
                        (await call(http, daemon, "GET", f"/v1/jobs/{j['id']}"))[1] for j in jobs
                    ]
                    if all(s["state"] in {"sent", "drafted", "failed", "unknown"} for s in states):
                        break
                    await asyncio.sleep(0.1)
            assert [s["state"] for s in states] == ["sent", "drafted", "sent"]

            async with browser.get(
                f"{sandbox.base_url}/_sandbox/messages", ssl=sandbox_ssl
            ) as answer:
                held = (await answer.json())["messages"]
            assert sorted(m["internet_message_id"] for m in held) == sorted(
                j["message_id"] for j in jobs
            )
            for message in held:
                url = f"{sandbox.base_url}/_sandbox/messages/{message['id']}/attachments/0"
                async with browser.get(url, ssl=sandbox_ssl) as answer:
                    assert await answer.read() == pdf
    finally:
        daemon.process.send_signal(signal.SIGTERM)
        exit_code = daemon.process.wait(timeout=60)
    assert exit_code == 0, daemon.log_path.read_text()[-3000:]

    secrets = issued_secrets(sandbox)
    assert secrets, "the sandbox issued no token: the test would prove nothing"
    stored = b"".join(
        path.read_bytes() for path in daemon.database.parent.glob(daemon.database.name + "*")
    )
    logs = daemon.log_path.read_bytes()
    answers = b"".join(daemon.answers)
    assert len(logs) > 1000  # DEBUG logs were written, so the search below means something
    for secret in secrets:
        for where, haystack in (("database", stored), ("logs", logs), ("API answers", answers)):
            assert secret.encode() not in haystack, f"a token leaked into the {where}"
    assert api_key.encode() not in stored + logs + answers
    assert ADDRESS.encode() not in logs
    serve_lines = logs[serve_log_starts:].decode().splitlines()
    records = [json.loads(line) for line in serve_lines if line.strip()]
    assert {"time", "level", "logger", "event"} <= set(records[0])
    assert any(record["logger"].startswith("mailbox_worker") for record in records)
