"""``mailbox_worker.client`` against the daemon as a real process (docs/client.md).

The daemon runs as ``mailbox-worker serve`` with the sandbox in the test; everything below
the set-up (an account and an API key made with the CLI) goes through the client: the
mailbox is created with it and consented to at the sandbox, invoices are enqueued and
followed with it, and the daemon's error answers arrive as ``ApiError`` with their codes.
"""

from __future__ import annotations

import signal
import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest

from mailbox_worker.client import ApiError, MailboxWorkerClient, Message, attachment
from mailbox_worker.demo import play_admin_consent
from mailbox_worker.invoice_pdf import invoice_pdf
from mailbox_worker.sandbox import Sandbox

from .conftest import ADDRESS, Daemon, start

pytestmark = pytest.mark.e2e


@pytest.fixture
async def client(daemon: Daemon) -> AsyncIterator[MailboxWorkerClient]:
    """A client with an API key of a new account, on the running daemon; stopped after."""
    account = daemon.cli("accounts", "create", "Contoso Ltd")
    api_key = daemon.cli("keys", "create", "--account", account)
    await start(daemon)
    assert daemon.process is not None
    try:
        async with MailboxWorkerClient(daemon.base_url, api_key) as connected:
            yield connected
    finally:
        daemon.process.send_signal(signal.SIGTERM)
        exit_code = daemon.process.wait(timeout=60)
    assert exit_code == 0, daemon.log_path.read_text()[-3000:]


async def connect(client: MailboxWorkerClient, sandbox: Sandbox) -> str:
    """A Microsoft mailbox created with the client, its admin consenting at the sandbox."""
    created = await client.create_mailbox(
        provider="microsoft", capabilities=["send"], login_hint=ADDRESS
    )
    assert created["mailbox"]["state"] == "pending_consent"
    context = ssl.create_default_context(cafile=str(sandbox.ca_path))
    async with aiohttp.ClientSession() as browser:
        await play_admin_consent(browser, created["authorization_url"], ADDRESS, context)
    return created["mailbox"]["id"]


def invoice(number: str, pdf: bytes) -> Message:
    return {
        "to": [{"address": "ap@fabrikam.example", "name": "Fabrikam AP"}],
        "subject": f"Invoice {number}",
        "text": f"Invoice {number} attached.",
        "attachments": [attachment(f"{number}.pdf", pdf)],
    }


async def test_an_invoice_enqueued_with_the_client_is_sent_once(
    client: MailboxWorkerClient, sandbox: Sandbox
) -> None:
    mailbox_id = await connect(client, sandbox)
    mailboxes = await client.list_mailboxes()
    assert [(m["id"], m["state"], m["address"]) for m in mailboxes] == [
        (mailbox_id, "connected", ADDRESS)
    ]
    assert (await client.get_mailbox(mailbox_id))["granted_scopes"]

    pdf = invoice_pdf(["Invoice INV-1", "Amount 99.00 EUR"])
    job = await client.enqueue(
        mailbox_id=mailbox_id, mode="send", message=invoice("INV-1", pdf), reference="INV-1"
    )
    assert (job["state"], job["reference"]) == ("queued", "INV-1")
    done = await client.wait_for_outcome(job["id"], timeout=60, poll_interval=0.1)
    assert done["state"] == "sent", done
    assert done["id"] == job["id"]
    assert [event["to_state"] for event in done["events"] if event["to_state"]][-1] == "sent"

    context = ssl.create_default_context(cafile=str(sandbox.ca_path))
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{sandbox.base_url}/_sandbox/messages", ssl=context) as answer,
    ):
        held = (await answer.json())["messages"]
    assert [m["internet_message_id"] for m in held] == [job["message_id"]]


async def test_the_same_idempotency_key_answers_the_same_job(
    client: MailboxWorkerClient, sandbox: Sandbox
) -> None:
    mailbox_id = await connect(client, sandbox)
    message = invoice("INV-2", invoice_pdf(["Invoice INV-2"]))
    first = await client.enqueue(
        mailbox_id=mailbox_id, mode="send", message=message, idempotency_key="INV-2"
    )
    again = await client.enqueue(
        mailbox_id=mailbox_id, mode="send", message=message, idempotency_key="INV-2"
    )
    assert again["id"] == first["id"]
    # Without a key of the caller's, each call is a job of its own.
    other = await client.enqueue(mailbox_id=mailbox_id, mode="send", message=message)
    assert other["id"] != first["id"]
    for job_id in (first["id"], other["id"]):
        assert (await client.wait_for_outcome(job_id, timeout=60, poll_interval=0.1))[
            "state"
        ] == "sent"


async def test_the_daemons_errors_arrive_with_their_codes(
    client: MailboxWorkerClient, daemon: Daemon
) -> None:
    no_body: Message = {"to": [{"address": "ap@fabrikam.example"}], "subject": "Invoice"}
    with pytest.raises(ApiError) as invalid:
        await client.enqueue(mailbox_id="mbx_unknown", mode="send", message=no_body)
    assert (invalid.value.status, invalid.value.code) == (400, "missing_body")
    assert invalid.value.message

    with pytest.raises(ApiError) as missing:
        await client.get_job("job_doesnotexist")
    assert (missing.value.status, missing.value.code) == (404, "job_not_found")

    async with MailboxWorkerClient(daemon.base_url, "mw_not_a_key") as stranger:
        with pytest.raises(ApiError) as refused:
            await stranger.list_mailboxes()
    assert (refused.value.status, refused.value.code) == (401, "unauthenticated")
    assert "mw_not_a_key" not in str(refused.value)
    assert await client.list_mailboxes() == []
