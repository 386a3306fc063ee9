"""GraphProvider against the sandbox's Microsoft identity + Graph simulator, over real HTTPS.

Access tokens come from the real msal library driving the sandbox's consent page, so the
provider sees exactly what it would see in production. Faults are queued through the sandbox's
admin API (``/_sandbox/faults``) and the outcome is checked there too (``/_sandbox/messages``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import logging
import os
import ssl
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp
import msal
import pytest

from mailbox_worker.errors import (
    AccessTokenRejected,
    OutcomeUnknown,
    PermanentError,
    Throttled,
    TransientError,
)
from mailbox_worker.providers.base import OutgoingMessage
from mailbox_worker.providers.graph import REQUEST_BODY_LIMIT, UPLOAD_CHUNK, GraphProvider
from mailbox_worker.providers.graph_mime import largest_mime_for_base64
from mailbox_worker.sandbox import Sandbox
from mailbox_worker.tokens.oauth_sessions import close_session, new_session
from tests.ports import free_port

from .consent_form import FormReader

SENDER = "billing@contoso.example"
MAIL_SEND = "https://graph.microsoft.com/Mail.Send"
MAIL_READ_WRITE = "https://graph.microsoft.com/Mail.ReadWrite"
REDIRECT_URI = "http://127.0.0.1:8400/oauth/callback"
SEND_OPERATION = "graph.sendMail"


@pytest.fixture(scope="session")
def certificate_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CA for the whole session: the sandbox reuses valid certificates."""
    return tmp_path_factory.mktemp("sandbox")


@pytest.fixture
async def sandbox(certificate_dir: Path) -> AsyncIterator[Sandbox]:
    simulator = Sandbox(certificate_dir, "127.0.0.1")
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
def trust(sandbox: Sandbox) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(sandbox.ca_path))


@pytest.fixture
async def admin(sandbox: Sandbox, trust: ssl.SSLContext) -> AsyncIterator[Admin]:
    async with aiohttp.ClientSession(
        sandbox.base_url, connector=aiohttp.TCPConnector(ssl=trust)
    ) as session:
        yield Admin(session)


@pytest.fixture
async def provider(sandbox: Sandbox, trust: ssl.SSLContext) -> AsyncIterator[GraphProvider]:
    graph = GraphProvider(sandbox.graph_url, ssl_context=trust)
    yield graph
    await graph.close()


@pytest.fixture
async def token(sandbox: Sandbox, trust: ssl.SSLContext) -> str:
    return await acquire_token(sandbox, trust, [MAIL_SEND, MAIL_READ_WRITE])


class Admin:
    """The sandbox's inspection and fault API."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def messages(self, folder: str | None = None) -> list[dict[str, Any]]:
        params = {"folder": folder} if folder else {}
        async with self._session.get("/_sandbox/messages", params=params) as response:
            assert response.status == 200
            document = await response.json()
        messages: list[dict[str, Any]] = document["messages"]
        return messages

    async def raw(self, message_id: str) -> bytes:
        async with self._session.get(f"/_sandbox/messages/{message_id}/raw") as response:
            assert response.status == 200
            return await response.read()

    async def counters(self) -> dict[str, int]:
        async with self._session.get("/_sandbox/counters") as response:
            counters: dict[str, int] = (await response.json())["counters"]
        return counters

    async def fault(self, **fault: Any) -> None:
        async with self._session.post("/_sandbox/faults", json=fault) as response:
            assert response.status == 201, await response.text()


async def _submit_form(
    browser: aiohttp.ClientSession, url: str, method: str, fields: list[tuple[str, str]]
) -> FormReader:
    """Request ``url`` like a browser and read the form on the page it answers with."""
    async with browser.request(method, url, data=fields or None) as page:
        assert page.status == 200, await page.text()
        form = FormReader()
        form.feed(await page.text())
    return form


async def acquire_token(
    sandbox: Sandbox, trust: ssl.SSLContext, scopes: list[str], login: str = SENDER
) -> str:
    """A delegated Graph access token for ``login``, obtained as the daemon would (msal)."""
    http = new_session(str(sandbox.ca_path))
    try:
        # msal is synchronous (discovery runs in its constructor): keep it off the loop
        # that serves the sandbox.
        application = await asyncio.to_thread(
            msal.ConfidentialClientApplication,
            "sandbox-client",
            client_credential="sandbox-secret",
            authority=sandbox.authority_url(),
            instance_discovery=False,
            http_client=http,
        )
        flow = await asyncio.to_thread(
            application.initiate_auth_code_flow,
            scopes,
            redirect_uri=REDIRECT_URI,
            login_hint=login,
            response_mode="form_post",
        )
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as browser:
            consent = await _submit_form(browser, flow["auth_uri"], "GET", [])
            answer = await _submit_form(
                browser, urljoin(flow["auth_uri"], consent.action), "POST",
                [*consent.submission, ("action", "accept")],
            )  # fmt: skip
        callback = dict(answer.submission)  # what the browser would post to our redirect URI
        result = await asyncio.to_thread(
            application.acquire_token_by_auth_code_flow, flow, callback
        )
    finally:
        close_session(http)
    assert "access_token" in result, result.get("error")
    access_token: str = result["access_token"]
    return access_token


def invoice_mime(
    message_id: str, pdf: bytes, *, sender: str = SENDER, to: str | None = "ap@fabrikam.example"
) -> bytes:
    mail = EmailMessage(policy=email.policy.SMTP)
    mail["From"] = f"Contoso Billing <{sender}>"
    if to is not None:
        mail["To"] = to
    mail["Subject"] = "Invoice 2025-0042"
    mail["Message-ID"] = message_id
    mail.set_content("Please find invoice 2025-0042 attached.\n")
    mail.add_attachment(pdf, maintype="application", subtype="pdf", filename="invoice.pdf")
    return mail.as_bytes()


def outgoing(job: str = "job_1", **options: Any) -> OutgoingMessage:
    message_id = f"<{job}@invoices.example>"
    pdf = b"%PDF-1.7\n" + os.urandom(40_000) + b"\n%%EOF\n"
    return OutgoingMessage(
        job_id=job, mime=invoice_mime(message_id, pdf, **options), message_id=message_id
    )


def mime_of_size(size: int) -> OutgoingMessage:
    """A valid message of exactly ``size`` bytes (a long plain-text body)."""
    message_id = "<job_big@invoices.example>"
    head = (
        f"From: {SENDER}\r\nTo: ap@fabrikam.example\r\nSubject: big\r\n"
        f"Message-ID: {message_id}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    line = b"x" * 78 + b"\r\n"
    body = (line * (size // len(line) + 1))[: size - len(head)]
    return OutgoingMessage(job_id="job_big", mime=head + body, message_id=message_id)


async def test_send_delivers_the_mime_message_unchanged(
    provider: GraphProvider, token: str, admin: Admin
) -> None:
    message = outgoing()

    receipt = await provider.send(token, message)

    assert receipt.state == "sent"
    assert receipt.provider_message_id is None
    [stored] = await admin.messages(folder="sent")
    assert stored["internet_message_id"] == message.message_id
    raw = await admin.raw(stored["id"])
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Message-ID"] == message.message_id
    sent = email.message_from_bytes(message.mime, policy=email.policy.default)
    [sent_pdf] = [part.get_content() for part in sent.iter_attachments()]
    [stored_pdf] = [part.get_content() for part in parsed.iter_attachments()]
    assert stored_pdf == sent_pdf
    assert stored["attachments"][0]["name"] == "invoice.pdf"


async def test_create_draft_returns_the_draft_id(
    provider: GraphProvider, token: str, admin: Admin
) -> None:
    message = outgoing("job_draft")

    receipt = await provider.create_draft(token, message)

    assert receipt.state == "drafted"
    [stored] = await admin.messages(folder="drafts")
    assert receipt.provider_message_id == stored["id"]
    assert receipt.web_link is not None
    assert stored["internet_message_id"] == message.message_id
    assert await admin.messages(folder="sent") == []


async def test_draft_with_a_send_only_token_is_scope_missing(
    provider: GraphProvider, sandbox: Sandbox, trust: ssl.SSLContext, admin: Admin
) -> None:
    send_only = await acquire_token(sandbox, trust, [MAIL_SEND])

    with pytest.raises(PermanentError) as raised:
        await provider.create_draft(send_only, outgoing())

    assert raised.value.code == "scope_missing"
    assert raised.value.provider_status == 403
    assert await admin.messages() == []


async def test_a_garbage_token_is_rejected(provider: GraphProvider) -> None:
    with pytest.raises(AccessTokenRejected) as raised:
        await provider.send("not-a-token", outgoing())

    assert raised.value.provider_status == 401
    assert "not-a-token" not in str(raised.value)


async def test_an_expired_token_is_rejected(
    provider: GraphProvider, sandbox: Sandbox, trust: ssl.SSLContext, admin: Admin
) -> None:
    sandbox.state.access_token_lifetime = 1
    short_lived = await acquire_token(sandbox, trust, [MAIL_SEND])
    sandbox.state.advance(2)  # past its lifetime of 1 s

    with pytest.raises(AccessTokenRejected) as raised:
        await provider.send(short_lived, outgoing())

    assert raised.value.code == "access_token_rejected"
    assert await admin.messages() == []


async def test_throttling_carries_retry_after_and_nothing_is_sent(
    provider: GraphProvider, token: str, admin: Admin
) -> None:
    await admin.fault(operation=SEND_OPERATION, kind="status", status=429, retry_after=7)

    with pytest.raises(Throttled) as raised:
        await provider.send(token, outgoing())

    assert raised.value.retry_after == 7.0
    assert raised.value.provider_status == 429
    assert await admin.messages() == []
    assert (await provider.send(token, outgoing())).state == "sent"


async def test_more_than_four_concurrent_requests_are_throttled(
    provider: GraphProvider, token: str, admin: Admin, sandbox: Sandbox
) -> None:
    await admin.fault(operation=SEND_OPERATION, kind="delay", delay=0.5, times=4)
    slow = [asyncio.create_task(provider.send(token, outgoing(f"job_{n}"))) for n in range(4)]
    while sum(sandbox.state.in_flight.values()) < 4:
        await asyncio.sleep(0.01)

    with pytest.raises(Throttled) as raised:
        await provider.send(token, outgoing("job_5"))

    assert raised.value.retry_after == float(sandbox.state.throttle_retry_after)
    assert [receipt.state for receipt in await asyncio.gather(*slow)] == ["sent"] * 4
    assert len(await admin.messages()) == 4


async def test_service_unavailable_is_transient(
    provider: GraphProvider, token: str, admin: Admin
) -> None:
    await admin.fault(operation=SEND_OPERATION, kind="status", status=503, retry_after=2)

    with pytest.raises(TransientError) as raised:
        await provider.send(token, outgoing())

    assert not isinstance(raised.value, Throttled)
    assert (raised.value.code, raised.value.retry_after) == ("service_unavailable", 2.0)
    assert await admin.messages() == []


async def test_a_reset_is_outcome_unknown_even_when_nothing_was_processed(
    provider: GraphProvider, token: str, admin: Admin
) -> None:
    await admin.fault(operation=SEND_OPERATION, kind="reset")

    with pytest.raises(OutcomeUnknown) as raised:
        await provider.send(token, outgoing())

    # The sandbox dropped the connection before processing; the client cannot know that.
    assert raised.value.code == "connection_lost"
    assert raised.value.provider_status is None
    assert await admin.messages() == []


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_an_error_after_acceptance_is_outcome_unknown(
    provider: GraphProvider, token: str, admin: Admin, status: int
) -> None:
    await admin.fault(operation=SEND_OPERATION, kind="accept_then_status", status=status)

    with pytest.raises(OutcomeUnknown) as raised:
        await provider.send(token, outgoing())

    assert raised.value.code == "provider_error_ambiguous"
    assert raised.value.provider_status == status
    assert len(await admin.messages(folder="sent")) == 1


async def test_a_reset_after_acceptance_is_outcome_unknown(
    provider: GraphProvider, token: str, admin: Admin
) -> None:
    await admin.fault(operation="graph.createMessage", kind="accept_then_reset")

    with pytest.raises(OutcomeUnknown) as raised:
        await provider.create_draft(token, outgoing())

    assert raised.value.code == "connection_lost"
    assert len(await admin.messages(folder="drafts")) == 1


async def test_a_timeout_after_sending_is_outcome_unknown(
    sandbox: Sandbox, trust: ssl.SSLContext, token: str, admin: Admin
) -> None:
    impatient = GraphProvider(
        sandbox.graph_url, ssl_context=trust, timeout=aiohttp.ClientTimeout(total=0.3)
    )
    await admin.fault(operation=SEND_OPERATION, kind="delay", delay=0.6)
    try:
        with pytest.raises(OutcomeUnknown) as raised:
            await impatient.send(token, outgoing())
    finally:
        await impatient.close()

    assert raised.value.code == "timeout"
    for _ in range(100):  # the sandbox finishes the request after we gave up on it
        if await admin.messages():
            break
        await asyncio.sleep(0.05)
    assert len(await admin.messages(folder="sent")) == 1


async def test_too_large_fails_without_a_request(
    provider: GraphProvider, token: str, admin: Admin
) -> None:
    largest = provider.max_message_bytes("send", ["send", "draft"])

    with pytest.raises(PermanentError) as raised:
        await provider.send(token, mime_of_size(largest + 1))

    assert raised.value.code == "message_too_large"
    assert raised.value.provider_status is None
    assert SEND_OPERATION not in await admin.counters()


async def test_a_body_too_large_for_one_request_fails_without_a_request(
    provider: GraphProvider, token: str, admin: Admin
) -> None:
    message = mime_of_size(largest_mime_for_base64(REQUEST_BODY_LIMIT) + 1)  # no attachments

    with pytest.raises(PermanentError) as raised:
        await provider.create_draft(token, message)

    assert raised.value.code == "message_too_large"
    assert [name for name in await admin.counters() if name.startswith("graph.")] == []


async def test_the_largest_single_request_message_is_accepted(
    provider: GraphProvider, token: str, admin: Admin
) -> None:
    message = mime_of_size(largest_mime_for_base64(REQUEST_BODY_LIMIT))

    receipt = await provider.create_draft(token, message)

    [stored] = await admin.messages(folder="drafts")
    assert stored["id"] == receipt.provider_message_id
    assert stored["size"] == len(message.mime)


async def test_sending_as_someone_else_is_refused(provider: GraphProvider, token: str) -> None:
    with pytest.raises(PermanentError) as raised:
        await provider.send(token, outgoing(sender="ceo@contoso.example"))

    assert (raised.value.code, raised.value.provider_status) == ("send_as_denied", 403)


async def test_a_message_without_recipients_is_refused(provider: GraphProvider, token: str) -> None:
    with pytest.raises(PermanentError) as raised:
        await provider.send(token, outgoing(to=None))

    assert (raised.value.code, raised.value.provider_status) == ("invalid_recipients", 400)


async def test_a_mailbox_without_exchange_online_is_refused(
    provider: GraphProvider, sandbox: Sandbox, trust: ssl.SSLContext
) -> None:
    sandbox.state.add_user("onprem@contoso.example", "On-prem user", mailbox_enabled=False)
    on_premises = await acquire_token(sandbox, trust, [MAIL_SEND], login="onprem@contoso.example")

    with pytest.raises(PermanentError) as raised:
        await provider.send(on_premises, outgoing(sender="onprem@contoso.example"))

    assert (raised.value.code, raised.value.provider_status) == ("mailbox_not_enabled", 404)


async def test_refused_connection_is_transient(token: str) -> None:
    closed_port = free_port()
    graph = GraphProvider(f"https://127.0.0.1:{closed_port}/v1.0")
    try:
        with pytest.raises(TransientError) as raised:
            await graph.send(token, outgoing())
    finally:
        await graph.close()

    assert raised.value.code == "network"


async def test_a_timeout_before_the_request_is_written_is_transient(token: str) -> None:
    """A server that accepts TCP but never completes the TLS handshake: nothing was sent."""
    silent: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # Only a total timeout: it expires during the handshake, not as a connect timeout.
    graph = GraphProvider(
        f"https://127.0.0.1:{port}/v1.0", timeout=aiohttp.ClientTimeout(total=0.3)
    )
    try:
        with pytest.raises(TransientError) as raised:
            await graph.send(token, outgoing())
    finally:
        await graph.close()
        for writer in silent:
            writer.close()
        server.close()
        await server.wait_closed()

    assert raised.value.code == "network"


async def test_untrusted_certificate_is_transient(
    sandbox: Sandbox, token: str, admin: Admin
) -> None:
    graph = GraphProvider(sandbox.graph_url)  # the system trust store: no sandbox CA
    try:
        with pytest.raises(TransientError) as raised:
            await graph.send(token, outgoing())
    finally:
        await graph.close()

    assert raised.value.code == "network"
    assert SEND_OPERATION not in await admin.counters()


async def test_logs_name_request_ids_never_secrets_or_content(
    provider: GraphProvider, token: str, admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailbox_worker.providers.graph")
    await admin.fault(operation=SEND_OPERATION, kind="status", status=429)

    with pytest.raises(Throttled):
        await provider.send(token, outgoing("job_logged"))
    await provider.send(token, outgoing("job_logged"))

    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    assert all("job_logged" in line and "request-id=" in line for line in lines)
    assert "request-id=-" not in " ".join(lines)
    for secret_or_content in (token, token[:40], "fabrikam", SENDER, "Invoice"):
        assert all(secret_or_content not in line for line in lines)


async def test_a_given_session_is_used_and_left_open(
    sandbox: Sandbox, trust: ssl.SSLContext, token: str, admin: Admin
) -> None:
    async with aiohttp.ClientSession() as session:
        graph = GraphProvider(sandbox.graph_url, ssl_context=trust, session=session)
        assert (await graph.send(token, outgoing())).state == "sent"
        await graph.close()
        assert not session.closed


# -- messages above one request: a draft, its attachments uploaded, then its send -----------


class RecordedProgress:
    """A ``DeliveryProgress`` that remembers what it was told, in order."""

    def __init__(self) -> None:
        self.steps: list[str] = []

    async def draft_created(self, draft_id: str) -> None:
        self.steps.append(f"created {draft_id}")

    async def draft_completed(self, draft_id: str) -> None:
        self.steps.append(f"completed {draft_id}")

    async def about_to_send(self) -> None:
        self.steps.append("about to send")


FILES = {
    "invoice.pdf": ("application", "pdf", 9 * 1024 * 1024),  # an upload session, 3 ranges
    "usage.csv": ("text", "csv", 1536 * 1024),  # the rest still too large: a fileAttachment
    "logo.png": ("image", "png", 1536 * 1024),  # small enough to stay in the draft's MIME
}


def large_message(job: str) -> OutgoingMessage:
    message_id = f"<{job}@invoices.example>"
    mail = EmailMessage(policy=email.policy.SMTP)
    mail["From"] = SENDER
    mail["To"] = "ap@fabrikam.example"
    mail["Subject"] = "Invoice 2025-0043"
    mail["Message-ID"] = message_id
    mail.set_content("Please find invoice 2025-0043 attached.\n")
    for name, (maintype, subtype, size) in FILES.items():
        data = os.urandom(size)
        if maintype == "text":
            mail.add_attachment(data.hex()[:size], subtype=subtype, filename=name)
        else:
            mail.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return OutgoingMessage(job_id=job, mime=mail.as_bytes(), message_id=message_id)


def attachments_of(raw: bytes) -> dict[str, bytes]:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return {
        str(part.get_filename()): part.get_payload(decode=True)  # type: ignore[misc]
        for part in parsed.iter_attachments()
    }


async def test_a_large_message_is_sent_through_a_draft_with_upload_sessions(
    provider: GraphProvider, token: str, admin: Admin
) -> None:
    message = large_message("job_large")
    progress = RecordedProgress()

    receipt = await provider.send(token, message, progress=progress)

    [stored] = await admin.messages(folder="sent")
    assert await admin.messages(folder="drafts") == []
    assert (receipt.state, receipt.provider_draft_id) == ("sent", stored["id"])
    assert stored["internet_message_id"] == message.message_id
    assert attachments_of(await admin.raw(stored["id"])) == attachments_of(message.mime)
    assert progress.steps == [
        f"created {stored['id']}",
        f"completed {stored['id']}",
        "about to send",
    ]
    counters = await admin.counters()
    ranges = -(-FILES["invoice.pdf"][2] // UPLOAD_CHUNK)
    assert {name: counters.get(f"graph.{name}") for name in (
        "sendMail", "createMessage", "createUploadSession", "uploadChunk", "addAttachment",
        "sendDraft",
    )} == {
        "sendMail": None, "createMessage": 1, "createUploadSession": 1, "uploadChunk": ranges,
        "addAttachment": 1, "sendDraft": 1,
    }  # fmt: skip


async def test_a_large_draft_is_left_complete_and_never_sent(
    provider: GraphProvider, token: str, admin: Admin
) -> None:
    message = large_message("job_large_draft")
    progress = RecordedProgress()

    receipt = await provider.create_draft(token, message, progress=progress)

    [stored] = await admin.messages(folder="drafts")
    assert await admin.messages(folder="sent") == []
    assert (receipt.state, receipt.provider_draft_id) == ("drafted", stored["id"])
    assert receipt.provider_message_id == stored["id"]
    assert attachments_of(await admin.raw(stored["id"])) == attachments_of(message.mime)
    assert progress.steps == [f"created {stored['id']}", f"completed {stored['id']}"]


async def test_a_resumed_delivery_sends_the_complete_draft_it_recorded(
    provider: GraphProvider, token: str, admin: Admin
) -> None:
    message = large_message("job_resumed")
    draft = await provider.create_draft(token, message)  # the first attempt stopped here
    assert draft.provider_draft_id is not None
    resumed = dataclasses.replace(message, draft_id=draft.provider_draft_id, draft_complete=True)
    progress = RecordedProgress()

    receipt = await provider.send(token, resumed, progress=progress)

    [stored] = await admin.messages(folder="sent")
    assert (receipt.state, stored["id"]) == ("sent", draft.provider_draft_id)
    assert await admin.messages(folder="drafts") == []
    assert progress.steps == ["about to send"]
    counters = await admin.counters()
    assert (counters.get("graph.createMessage"), counters.get("graph.sendDraft")) == (1, 1)


async def test_an_ambiguous_answer_while_uploading_is_transient(
    provider: GraphProvider, token: str, admin: Admin
) -> None:
    """The draft's id was reported and nothing was sent: a retry deletes the draft and
    starts over, so the error is safe to retry."""
    await admin.fault(operation="graph.createUploadSession", kind="status", status=500)
    progress = RecordedProgress()

    with pytest.raises(TransientError) as raised:
        await provider.send(token, large_message("job_upload_fails"), progress=progress)

    assert raised.value.code == "provider_error_ambiguous"
    [draft] = await admin.messages(folder="drafts")
    assert progress.steps == [f"created {draft['id']}"]
    assert await admin.messages(folder="sent") == []
