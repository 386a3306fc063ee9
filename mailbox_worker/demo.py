"""``mailbox-worker demo``: the whole path, on a fresh machine, with nothing configured.

Starts the sandbox (simulated Microsoft identity + Graph) and the daemon (embedded SQLite, a
file key generated on first use), creates an account and an API key, connects a mailbox
through the real authorization-code flow (playing the admin's browser on the consent page),
enqueues invoices over the HTTP API, follows them to ``sent``/``drafted``, checks each against
what the sandbox received (one message per invoice, PDF byte-equal, Message-ID from the job
id) and prints a summary. Exit status 0 only when every check holds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import logging
import re
import socket
import ssl
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp

from mailbox_worker.app import App
from mailbox_worker.config import (
    DatabaseSettings,
    GoogleSettings,
    KeySettings,
    LoggingSettings,
    MicrosoftSettings,
    ServerSettings,
    Settings,
    WorkerSettings,
)
from mailbox_worker.invoice_pdf import invoice_pdf
from mailbox_worker.sandbox import Sandbox
from mailbox_worker.states import TERMINAL, JobState, MailboxState

DEMO_ADDRESS = "billing@contoso.example"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def demo_settings(data_dir: Path, sandbox: Sandbox, port: int) -> Settings:
    public_url = f"http://127.0.0.1:{port}"
    return Settings(
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{data_dir / 'mailbox-worker.db'}"),
        server=ServerSettings(host="127.0.0.1", port=port, public_url=public_url),
        worker=WorkerSettings(poll_interval=0.2, concurrency=8, shutdown_grace=10.0),
        keys=KeySettings(source="file", file=str(data_dir / "keys.json"), create_if_missing=True),
        microsoft=MicrosoftSettings(
            client_id="sandbox-client",
            client_secret="sandbox-secret",  # noqa: S106 - the sandbox demo app, not a secret
            authority=sandbox.authority_url(),
            graph_url=sandbox.graph_url,
            ca_file=str(sandbox.ca_path),
        ),
        google=GoogleSettings(
            client_id="sandbox-google-client",
            client_secret="sandbox-google-secret",  # noqa: S106 - the sandbox demo app
            auth_url=sandbox.google_auth_url,
            token_url=sandbox.google_token_url,
            revoke_url=sandbox.google_revoke_url,
            gmail_url=sandbox.gmail_api_endpoint,
            ca_file=str(sandbox.ca_path),
        ),
        logging=LoggingSettings(level="WARNING"),
    )


class _FormParser(HTMLParser):
    """Collects the consent form: its action and its inputs (what a browser would submit)."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form" and self.action is None:
            self.action = attributes.get("action", "")
        elif tag == "input" and attributes.get("name"):
            kind = attributes.get("type", "text")
            if kind == "checkbox" and "checked" not in attributes:
                return
            if kind not in ("submit", "button"):
                self.fields.append((attributes["name"], attributes.get("value", "")))


async def play_admin_consent(
    http: aiohttp.ClientSession, authorization_url: str, login: str, ssl_context: ssl.SSLContext
) -> str:
    """Open the consent page, accept it as ``login``, and follow the redirect to our callback.

    Returns the callback page's text. Works for any page with one form and an ``action``
    button named ``accept``, as the sandbox serves.
    """
    async with http.get(authorization_url, ssl=ssl_context) as page:
        page.raise_for_status()
        parser = _FormParser()
        parser.feed(await page.text())
    fields = [(name, login if name == "login" else value) for name, value in parser.fields]
    fields.append(("action", "accept"))
    target = urljoin(authorization_url, parser.action or "")
    async with http.post(target, data=fields, ssl=ssl_context, allow_redirects=False) as answer:
        if answer.status not in (302, 303):
            raise RuntimeError(f"consent page answered {answer.status}")
        callback = answer.headers["Location"]
    async with http.get(callback, allow_redirects=False) as done:
        return await done.text()


@dataclasses.dataclass
class Invoice:
    reference: str
    mode: str
    pdf: bytes
    job_id: str = ""
    state: str = JobState.QUEUED
    message_id: str = ""


async def run_demo(*, keep: bool, invoices: int, data_dir: Path | None) -> int:
    logging.getLogger().setLevel(logging.WARNING)  # the demo prints its own progress
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mw-demo-")))
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # it holds the database and keys
        sandbox = Sandbox(data_dir / "sandbox")
        await sandbox.start()
        try:
            return await _with_sandbox(sandbox, data_dir, keep=keep, invoices=invoices)
        finally:
            await sandbox.stop()


async def _with_sandbox(sandbox: Sandbox, data_dir: Path, *, keep: bool, invoices: int) -> int:
    print(f"sandbox  {sandbox.base_url}  (CA certificate: {sandbox.ca_path})")
    settings = demo_settings(data_dir, sandbox, _free_port())
    app = App.build(settings)
    await app.migrate()
    stop, started = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task(app.serve(stop, started=started))
    await started.wait()
    base = settings.server.public_url
    print(f"daemon   {base}  (SQLite: {data_dir / 'mailbox-worker.db'})")
    try:
        account = await app.accounts.create_account("Contoso Ltd (demo)")
        issued = await app.accounts.create_api_key(
            account.id,
            "demo",
            frozenset({"jobs:read", "jobs:write", "mailboxes:read", "mailboxes:write"}),
        )
        headers = {"Authorization": f"Bearer {issued.secret}"}
        sandbox_ssl = ssl.create_default_context(cafile=str(sandbox.ca_path))
        async with (
            aiohttp.ClientSession(headers=headers) as api,
            aiohttp.ClientSession() as browser,
        ):
            mailbox_id = await _connect(api, browser, base, sandbox_ssl)
            batch = _invoices(invoices)
            await _enqueue(api, base, mailbox_id, batch)
            await _follow(api, base, batch)
            ok = await _verify(batch, sandbox, sandbox_ssl)
            if keep:
                print(f"\nkept running: API {base}, sandbox {sandbox.base_url}/_sandbox/messages")
                print(f"API key for this run: {issued.secret}\nCtrl-C to stop.")
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.Event().wait()
        return 0 if ok else 1
    finally:
        stop.set()
        await server
        await app.close()


async def _connect(
    api: aiohttp.ClientSession,
    browser: aiohttp.ClientSession,
    base: str,
    sandbox_ssl: ssl.SSLContext,
) -> str:
    body = {"provider": "microsoft", "capabilities": ["send", "draft"], "login_hint": DEMO_ADDRESS}
    async with api.post(f"{base}/v1/mailboxes", json=body) as answer:
        created: dict[str, Any] = await answer.json()
        if answer.status != 201:
            raise RuntimeError(f"creating the mailbox failed: {created}")
    mailbox_id = str(created["mailbox"]["id"])
    print(f"\n1. mailbox {mailbox_id} created; the admin consents at the sandbox's page")
    await play_admin_consent(browser, created["authorization_url"], DEMO_ADDRESS, sandbox_ssl)
    async with api.get(f"{base}/v1/mailboxes/{mailbox_id}") as answer:
        mailbox = await answer.json()
    print(
        f"   -> {mailbox['state']} as {mailbox['address']} "
        f"(scopes granted: {', '.join(mailbox['granted_scopes'])})"
    )
    if mailbox["state"] != MailboxState.CONNECTED:
        raise RuntimeError(f"the mailbox did not connect: {mailbox.get('state_reason')}")
    return mailbox_id


def _invoices(count: int) -> list[Invoice]:
    batch = []
    for number in range(1, count + 1):
        reference = f"INV-2026-{number:04d}"
        amount = f"{100 + number * 37.5:.2f} EUR"
        pdf = invoice_pdf([f"Contoso Ltd - Invoice {reference}", f"Amount due: {amount}"])
        batch.append(Invoice(reference, "draft" if number % 4 == 0 else "send", pdf))
    return batch


async def _enqueue(
    api: aiohttp.ClientSession, base: str, mailbox_id: str, batch: list[Invoice]
) -> None:
    print(f"\n2. enqueueing {len(batch)} invoices over the API")
    for invoice in batch:
        body = {
            "mailbox_id": mailbox_id,
            "mode": invoice.mode,
            "reference": invoice.reference,
            "message": {
                "from": {"address": DEMO_ADDRESS, "name": "Contoso Billing"},
                "to": [{"address": "customer@fabrikam.example", "name": "Fabrikam AP"}],
                "subject": f"Invoice {invoice.reference}",
                "text": f"Hello,\n\nplease find invoice {invoice.reference} attached.\n",
                "attachments": [
                    {
                        "filename": f"{invoice.reference}.pdf",
                        "content_type": "application/pdf",
                        "content_base64": base64.b64encode(invoice.pdf).decode(),
                    }
                ],
            },
        }
        headers = {"Idempotency-Key": invoice.reference}
        async with api.post(f"{base}/v1/jobs", json=body, headers=headers) as answer:
            job = await answer.json()
            if answer.status != 202:
                raise RuntimeError(f"enqueue failed: {job}")
        invoice.job_id, invoice.message_id = job["id"], job["message_id"]


async def _follow(api: aiohttp.ClientSession, base: str, batch: list[Invoice]) -> None:
    print("\n3. following the jobs")
    deadline = time.monotonic() + 60
    last = ""
    while time.monotonic() < deadline:
        for invoice in batch:
            if invoice.state not in TERMINAL:
                async with api.get(f"{base}/v1/jobs/{invoice.job_id}") as answer:
                    invoice.state = (await answer.json())["state"]
        counts: dict[str, int] = {}
        for invoice in batch:
            counts[invoice.state] = counts.get(invoice.state, 0) + 1
        line = "   " + "  ".join(f"{state}: {n}" for state, n in sorted(counts.items()))
        if line != last:
            print(line)
            last = line
        if all(invoice.state in TERMINAL for invoice in batch):
            return
        await asyncio.sleep(0.2)


async def _verify(batch: list[Invoice], sandbox: Sandbox, sandbox_ssl: ssl.SSLContext) -> bool:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sandbox.base_url}/_sandbox/messages", ssl=sandbox_ssl) as answer:
            held = (await answer.json())["messages"]
        by_message_id: dict[str, list[dict[str, Any]]] = {}
        for message in held:
            by_message_id.setdefault(message["internet_message_id"], []).append(message)
        print("\n4. summary\n")
        print(f"   {'invoice':<14} {'mode':<6} {'state':<8} {'sandbox':<8} {'PDF':<10} Message-ID")
        ok = len(held) == len(batch)
        for invoice in batch:
            copies = by_message_id.get(invoice.message_id, [])
            pdf_ok = False
            folder = "-"
            if len(copies) == 1:
                folder = copies[0]["folder"]
                url = f"{sandbox.base_url}/_sandbox/messages/{copies[0]['id']}/attachments/0"
                async with http.get(url, ssl=sandbox_ssl) as answer:
                    pdf_ok = await answer.read() == invoice.pdf
            expected_state = JobState.SENT if invoice.mode == "send" else JobState.DRAFTED
            expected_folder = "sent" if invoice.mode == "send" else "drafts"
            derived = bool(
                re.fullmatch(rf"<{re.escape(invoice.job_id)}@[^>]+>", invoice.message_id)
            )
            row_ok = invoice.state == expected_state and folder == expected_folder and pdf_ok
            ok = ok and row_ok and derived
            digest = "equal" if pdf_ok else "DIFFERENT"
            print(
                f"   {invoice.reference:<14} {invoice.mode:<6} {invoice.state:<8} {folder:<8} "
                f"{digest:<10} {invoice.message_id}"
            )
        sha = hashlib.sha256(batch[0].pdf).hexdigest()[:12] if batch else ""
        print(
            f"\n   the sandbox holds {len(held)} messages for {len(batch)} invoices "
            f"({sandbox.base_url}/_sandbox/messages); first PDF sha256 {sha}…"
        )
        print("   result: " + ("all invoices delivered exactly once" if ok else "CHECKS FAILED"))
        return ok
