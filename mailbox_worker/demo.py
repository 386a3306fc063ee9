"""``mailbox-worker demo``: the whole path, on a fresh machine, with nothing configured.

Starts the sandbox (simulated Microsoft identity + Graph, Google OAuth + Gmail) and the daemon
(embedded SQLite, a file key generated on first use), creates an account and an API key,
connects a Microsoft 365 and a Google mailbox through the real authorization-code flows
(playing the admin's browser on each consent page), enqueues invoices for both over the HTTP
API with the invoicing app's client (``mailbox_worker.client``, docs/client.md), follows them
to ``sent``/``drafted``, checks each against what the sandbox received (one message per
invoice, in the right folder or label, PDF byte-equal, Message-ID from the job id) and prints
a summary. Exit status 0 only when every check holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import re
import socket
import ssl
import tempfile
import time
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import aiohttp

from mailbox_worker.app import App
from mailbox_worker.client import MailboxWorkerClient, Message, Mode, Provider, attachment
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
from mailbox_worker.states import TERMINAL, JobState

DEMO_ADDRESS = "billing@contoso.example"
GOOGLE_DEMO_ADDRESS = "invoices@fabrikam.example"


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
    mode: Mode
    pdf: bytes
    provider: Provider = "microsoft"
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
        sandbox_ssl = ssl.create_default_context(cafile=str(sandbox.ca_path))
        async with (
            MailboxWorkerClient(base, issued.secret) as api,
            aiohttp.ClientSession() as browser,
        ):
            batch: list[Invoice] = []
            mailboxes: tuple[tuple[Provider, str], ...] = (
                ("microsoft", DEMO_ADDRESS),
                ("google", GOOGLE_DEMO_ADDRESS),
            )
            for provider, address in mailboxes:
                mailbox_id = await _connect(api, browser, sandbox_ssl, provider, address)
                invoices_of_mailbox = _invoices(invoices, provider)
                await _enqueue(api, mailbox_id, invoices_of_mailbox, address)
                batch += invoices_of_mailbox
            await _follow(api, batch)
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
    api: MailboxWorkerClient,
    browser: aiohttp.ClientSession,
    sandbox_ssl: ssl.SSLContext,
    provider: Provider,
    address: str,
) -> str:
    created = await api.create_mailbox(
        provider=provider, capabilities=["send", "draft"], login_hint=address
    )
    mailbox_id = created["mailbox"]["id"]
    print(f"\n1. {provider} mailbox {mailbox_id} created; the admin consents at the sandbox's page")
    await play_admin_consent(browser, created["authorization_url"], address, sandbox_ssl)
    mailbox = await api.get_mailbox(mailbox_id)
    print(
        f"   -> {mailbox['state']} as {mailbox['address']} "
        f"(scopes granted: {', '.join(mailbox['granted_scopes'])})"
    )
    if mailbox["state"] != "connected":
        raise RuntimeError(f"the mailbox did not connect: {mailbox.get('state_reason')}")
    return mailbox_id


def _invoices(count: int, provider: Provider) -> list[Invoice]:
    batch = []
    series = "INV" if provider == "microsoft" else "GINV"
    for number in range(1, count + 1):
        reference = f"{series}-2026-{number:04d}"
        amount = f"{100 + number * 37.5:.2f} EUR"
        pdf = invoice_pdf([f"Contoso Ltd - Invoice {reference}", f"Amount due: {amount}"])
        mode: Mode = "draft" if number % 4 == 0 else "send"
        batch.append(Invoice(reference, mode, pdf, provider))
    return batch


async def _enqueue(
    api: MailboxWorkerClient, mailbox_id: str, batch: list[Invoice], address: str
) -> None:
    print(f"2. enqueueing {len(batch)} invoices over the API")
    for invoice in batch:
        message: Message = {
            "from": {"address": address, "name": "Contoso Billing"},
            "to": [{"address": "customer@fabrikam.example", "name": "Fabrikam AP"}],
            "subject": f"Invoice {invoice.reference}",
            "text": f"Hello,\n\nplease find invoice {invoice.reference} attached.\n",
            "attachments": [attachment(f"{invoice.reference}.pdf", invoice.pdf)],
        }
        # The invoice number as the idempotency key: enqueueing it again (a rerun after a
        # crash, say) answers the job already created instead of sending a second copy.
        job = await api.enqueue(
            mailbox_id=mailbox_id,
            mode=invoice.mode,
            reference=invoice.reference,
            message=message,
            idempotency_key=invoice.reference,
        )
        invoice.job_id, invoice.message_id = job["id"], job["message_id"]


async def _follow(api: MailboxWorkerClient, batch: list[Invoice]) -> None:
    print("\n3. following the jobs")
    deadline = time.monotonic() + 60
    last = ""
    while time.monotonic() < deadline:
        for invoice in batch:
            if invoice.state not in TERMINAL:
                invoice.state = (await api.get_job(invoice.job_id))["state"]
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


@dataclasses.dataclass
class Delivered:
    """What the sandbox holds for one invoice: copies found, where, and the PDF equal or not."""

    copies: int
    place: str
    pdf_equal: bool


async def _microsoft_deliveries(
    http: aiohttp.ClientSession, sandbox: Sandbox, batch: list[Invoice]
) -> tuple[int, dict[str, Delivered]]:
    """Graph's mailbox, read through the sandbox's inspection API."""
    async with http.get(f"{sandbox.base_url}/_sandbox/messages") as answer:
        held = (await answer.json())["messages"]
    found: dict[str, Delivered] = {}
    for invoice in batch:
        copies = [m for m in held if m["internet_message_id"] == invoice.message_id]
        pdf_equal, place = False, "-"
        if len(copies) == 1:
            place = copies[0]["folder"]
            url = f"{sandbox.base_url}/_sandbox/messages/{copies[0]['id']}/attachments/0"
            async with http.get(url) as answer:
                pdf_equal = await answer.read() == invoice.pdf
        found[invoice.job_id] = Delivered(len(copies), place, pdf_equal)
    return len(held), found


async def _google_deliveries(
    http: aiohttp.ClientSession, sandbox: Sandbox, batch: list[Invoice]
) -> tuple[int, dict[str, Delivered]]:
    """Gmail's mailbox: labels from the inspection API, the PDF parsed out of the raw message."""
    async with http.get(f"{sandbox.base_url}/_sandbox/google/messages") as answer:
        held = (await answer.json())["messages"]
    found: dict[str, Delivered] = {}
    for invoice in batch:
        copies = [m for m in held if m["message_id"] == invoice.message_id]
        pdf_equal, place = False, "-"
        if len(copies) == 1:
            place = "sent" if copies[0]["label"] == "SENT" else "drafts"
            url = f"{sandbox.base_url}/_sandbox/google/messages/{copies[0]['id']}/raw"
            async with http.get(url) as answer:
                pdf_equal = _attachment(await answer.read()) == invoice.pdf
        found[invoice.job_id] = Delivered(len(copies), place, pdf_equal)
    return len(held), found


def _attachment(raw: bytes) -> bytes | None:
    """The first attachment's bytes of an RFC 822 message."""
    message = message_from_bytes(raw, policy=email_policy.default)
    assert isinstance(message, EmailMessage)
    for part in message.iter_attachments():
        payload = part.get_payload(decode=True)
        return payload if isinstance(payload, bytes) else None
    return None


async def _verify(batch: list[Invoice], sandbox: Sandbox, sandbox_ssl: ssl.SSLContext) -> bool:
    microsoft = [invoice for invoice in batch if invoice.provider == "microsoft"]
    google = [invoice for invoice in batch if invoice.provider == "google"]
    connector = aiohttp.TCPConnector(ssl=sandbox_ssl)
    async with aiohttp.ClientSession(connector=connector) as http:
        held_microsoft, found = await _microsoft_deliveries(http, sandbox, microsoft)
        held_google, found_google = await _google_deliveries(http, sandbox, google)
    found.update(found_google)
    print("\n4. summary\n")
    print(
        f"   {'invoice':<15} {'provider':<10} {'mode':<6} {'state':<8} {'sandbox':<8} "
        f"{'PDF':<10} Message-ID"
    )
    ok = held_microsoft == len(microsoft) and held_google == len(google)
    for invoice in batch:
        delivered = found[invoice.job_id]
        expected_state = JobState.SENT if invoice.mode == "send" else JobState.DRAFTED
        expected_place = "sent" if invoice.mode == "send" else "drafts"
        derived = bool(re.fullmatch(rf"<{re.escape(invoice.job_id)}@[^>]+>", invoice.message_id))
        row_ok = (
            invoice.state == expected_state
            and delivered.copies == 1
            and delivered.place == expected_place
            and delivered.pdf_equal
        )
        ok = ok and row_ok and derived
        digest = "equal" if delivered.pdf_equal else "DIFFERENT"
        print(
            f"   {invoice.reference:<15} {invoice.provider:<10} {invoice.mode:<6} "
            f"{invoice.state:<8} {delivered.place:<8} {digest:<10} {invoice.message_id}"
        )
    sha = hashlib.sha256(batch[0].pdf).hexdigest()[:12] if batch else ""
    print(
        f"\n   the sandbox holds {held_microsoft} Graph and {held_google} Gmail messages for "
        f"{len(batch)} invoices ({sandbox.base_url}/_sandbox/messages, "
        f"/_sandbox/google/messages); first PDF sha256 {sha}…"
    )
    print("   result: " + ("all invoices delivered exactly once" if ok else "CHECKS FAILED"))
    return ok
