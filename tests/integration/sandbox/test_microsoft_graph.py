"""The sandbox's Microsoft Graph mail, with tokens from the unmodified msal, over plain HTTP.

The sandbox runs in the test's event loop; msal is synchronous, so it runs in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import secrets
import ssl

import aiohttp
import pytest
import requests

from mailbox_worker.sandbox import Sandbox

from .microsoft_helpers import (
    BILLING,
    PDF_BYTES,
    bearer,
    counters,
    graph_error,
    invoice_mime,
    mime_body,
    sign_in,
    stored_messages,
)

# -- Graph mail ------------------------------------------------------------------------------


async def test_send_mail_mime_is_stored_byte_for_byte(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    message = invoice_mime()
    async with http.post(
        f"{sandbox.graph_url}/me/sendMail",
        data=mime_body(message),
        headers={**bearer(signed_in.access_token), "client-request-id": "trace-me"},
    ) as response:
        assert response.status == 202
        assert await response.read() == b""
        assert response.headers["client-request-id"] == "trace-me"
        assert response.headers["request-id"]
    [stored] = await stored_messages(http, sandbox, mailbox=BILLING, folder="sent")
    assert stored["internet_message_id"] == message["Message-ID"]
    assert stored["to"] == ["ap@fabrikam.example"]
    assert stored["from"] == BILLING
    [attachment] = stored["attachments"]
    assert attachment["name"] == "invoice-2024-001.pdf"
    assert attachment["content_type"] == "application/pdf"
    assert attachment["sha256"] == hashlib.sha256(PDF_BYTES).hexdigest()
    base = f"{sandbox.base_url}/_sandbox/messages/{stored['id']}"
    async with http.get(f"{base}/attachments/0") as response:
        assert await response.read() == PDF_BYTES
    async with http.get(f"{base}/raw") as response:
        assert response.content_type == "message/rfc822"
        assert await response.read() == message.as_bytes()
    assert (await counters(http, sandbox))["graph.sendMail"] == 1


async def test_send_mail_json_form(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    payload = {
        "message": {
            "subject": "Invoice 7",
            "body": {"contentType": "Text", "content": "Attached."},
            "toRecipients": [{"emailAddress": {"address": "ap@fabrikam.example"}}],
            "attachments": [
                {
                    "@odata.type": "#microsoft.graph.fileAttachment",
                    "name": "invoice-7.pdf",
                    "contentType": "application/pdf",
                    "contentBytes": base64.b64encode(PDF_BYTES).decode(),
                }
            ],
        },
        "saveToSentItems": True,
    }
    async with http.post(
        f"{sandbox.graph_url}/users/{BILLING}/sendMail",
        data=json.dumps(payload),
        headers=bearer(signed_in.access_token, "application/json"),
    ) as response:
        assert response.status == 202
    [stored] = await stored_messages(http, sandbox)
    assert stored["subject"] == "Invoice 7"
    assert stored["attachments"][0]["sha256"] == hashlib.sha256(PDF_BYTES).hexdigest()
    assert stored["internet_message_id"].startswith("<")


async def test_draft_create_and_send(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send", "Mail.ReadWrite"])
    message = invoice_mime()
    async with http.post(
        f"{sandbox.graph_url}/me/messages",
        data=mime_body(message),
        headers=bearer(signed_in.access_token),
    ) as response:
        assert response.status == 201
        draft = await response.json()
    assert draft["isDraft"] is True
    assert draft["internetMessageId"] == message["Message-ID"]
    assert draft["hasAttachments"] is True
    assert draft["toRecipients"][0]["emailAddress"]["address"] == "ap@fabrikam.example"
    assert {"id", "conversationId", "webLink", "createdDateTime", "from"} <= set(draft)
    assert [m["id"] for m in await stored_messages(http, sandbox, folder="drafts")] == [draft["id"]]

    send_url = f"{sandbox.graph_url}/me/messages/{draft['id']}/send"
    async with http.post(send_url, headers=bearer(signed_in.access_token)) as response:
        assert response.status == 202
    assert await stored_messages(http, sandbox, folder="drafts") == []
    async with http.post(send_url, headers=bearer(signed_in.access_token)) as response:
        assert response.status == 404
        assert (await graph_error(response))["code"] == "ErrorItemNotFound"
    assert len(await stored_messages(http, sandbox, folder="sent")) == 1


async def test_scope_enforcement_and_authentication_errors(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send", "Mail.ReadWrite"])
    # The user unticked Mail.ReadWrite: the token covers only Mail.Send.
    narrow = await sign_in(
        sandbox, http, requests_session, ["Mail.Send", "Mail.ReadWrite"], untick=("Mail.ReadWrite",)
    )
    assert "Mail.ReadWrite" not in narrow.result["scope"].split(" ")
    assert "Mail.ReadWrite" in signed_in.result["scope"].split(" ")
    async with http.post(
        f"{sandbox.graph_url}/me/messages",
        data=mime_body(invoice_mime()),
        headers=bearer(narrow.access_token),
    ) as response:
        assert response.status == 403
        assert (await graph_error(response))["code"] == "ErrorAccessDenied"

    for headers, message in (
        ({"Content-Type": "text/plain"}, "Access token is empty."),
        (bearer("not-a-token"), "CompactToken parsing failed with error code: 80049217"),
    ):
        async with http.post(
            f"{sandbox.graph_url}/me/sendMail", data=b"", headers=headers
        ) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith('Bearer realm=""')
            assert (
                'client_id="00000003-0000-0000-c000-000000000000"'
                in (response.headers["WWW-Authenticate"])
            )
            error = await graph_error(response)
            assert error["code"] == "InvalidAuthenticationToken"
            assert error["message"] == message


async def test_limits_and_message_errors(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    url, headers = f"{sandbox.graph_url}/me/sendMail", bearer(signed_in.access_token)
    too_big = b"A" * (4 * 1024 * 1024 + 4)
    async with http.post(url, data=io.BytesIO(too_big), headers=headers) as response:
        assert response.status == 413
        assert (await graph_error(response))["code"] == "RequestEntityTooLarge"
    cases = [
        (mime_body(invoice_mime(sender="ceo@contoso.example")), 403, "ErrorSendAsDenied"),
        (mime_body(invoice_mime(recipients=())), 400, "ErrorInvalidRecipients"),
        (b"this is not base64!", 400, "ErrorMimeContentInvalidBase64String"),
    ]
    for body, status, code in cases:
        async with http.post(url, data=body, headers=headers) as response:
            assert response.status == status
            assert (await graph_error(response))["code"] == code
    assert await stored_messages(http, sandbox) == []


async def test_fault_injection(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    url, headers = f"{sandbox.graph_url}/me/sendMail", bearer(signed_in.access_token)
    fault = {"operation": "graph.sendMail", "kind": "status", "status": 429, "retry_after": 7}
    async with http.post(f"{sandbox.base_url}/_sandbox/faults", json=fault) as response:
        assert response.status == 201
    async with http.post(url, data=mime_body(invoice_mime()), headers=headers) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "7"
        assert (await graph_error(response))["code"] == "ApplicationThrottled"
    assert await stored_messages(http, sandbox) == []

    sandbox.state.queue_fault("graph.sendMail", "accept_then_reset")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with http.post(url, data=mime_body(invoice_mime()), headers=headers):
            pass
    assert len(await stored_messages(http, sandbox)) == 1  # the ambiguous case: it WAS sent

    async with http.post(url, data=mime_body(invoice_mime()), headers=headers) as response:
        assert response.status == 202
    assert (await counters(http, sandbox))["graph.sendMail"] == 3


async def test_more_than_four_concurrent_requests_are_throttled(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    sandbox.state.queue_fault("graph.sendMail", "delay", delay=0.5, times=5)

    async def send() -> tuple[int, str | None]:
        async with http.post(
            f"{sandbox.graph_url}/me/sendMail",
            data=mime_body(invoice_mime()),
            headers=bearer(signed_in.access_token),
        ) as response:
            return response.status, response.headers.get("Retry-After")

    results = await asyncio.gather(*(send() for _ in range(5)))
    assert sorted(status for status, _ in results) == [202, 202, 202, 202, 429]
    assert [retry for status, retry in results if status == 429] == ["1"]
    counted = await counters(http, sandbox)
    assert counted["graph.throttled.mailbox_concurrency"] == 1
    async with http.get(f"{sandbox.base_url}/_sandbox/concurrency") as response:
        peaks = (await response.json())["peak_in_flight"]
    assert peaks == {BILLING.lower(): 4}


async def test_a_refusal_records_what_held_the_slots(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    """A request whose client gave up still holds its slot while the provider works on it; the
    refusal of a 5th says so (``excused_by``), once, so a test can tell a client that kept 5
    requests open from one that had 4 open and one abandoned."""
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    sandbox.state.queue_fault("graph.sendMail", "delay", delay=1.0, times=4)
    url = f"{sandbox.graph_url}/me/sendMail"

    async def send(number: int, session: aiohttp.ClientSession) -> int:
        headers = {**bearer(signed_in.access_token), "client-request-id": f"held-{number}"}
        async with session.post(url, data=mime_body(invoice_mime()), headers=headers) as answer:
            return answer.status

    context = ssl.create_default_context(cafile=str(sandbox.ca_path))
    connector = aiohttp.TCPConnector(ssl=context)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as quitter:
        held = [asyncio.create_task(send(number, http)) for number in range(3)]
        abandoned = asyncio.create_task(send(3, quitter))
        while sum(sandbox.state.in_flight.values()) < 4:
            await asyncio.sleep(0.01)
        assert await send(4, http) == 429  # 4 open requests: the client's own excess
        abandoned.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await abandoned
    # The quitter's connection is closed (the sandbox shares this event loop: a pause lets it
    # read that); the sandbox, still sleeping, keeps its slot.
    await asyncio.sleep(0.05)
    assert await send(5, http) == 429
    assert await send(6, http) == 429  # one abandoned request excuses one refusal
    assert await asyncio.gather(*held) == [202, 202, 202]

    first, second, third = sandbox.state.concurrency_refusals
    assert (first.client_request_id, second.client_request_id) == ("held-4", "held-5")
    assert first.mailbox == second.mailbox == BILLING.lower()
    assert sorted(holder.client_request_id or "" for holder in first.holders) == [
        f"held-{number}" for number in range(4)
    ]
    assert first.excused_by is None
    assert second.excused_by == "held-3"
    assert third.excused_by is None
    [gone] = [holder for holder in second.holders if holder.client_hung_up]
    assert gone.client_request_id == "held-3"
    assert gone.operation == "graph.sendMail"
    assert gone.held_seconds > 0


async def test_large_attachment_through_an_upload_session(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send", "Mail.ReadWrite"])
    json_headers = bearer(signed_in.access_token, "application/json")
    draft_body = {
        "subject": "Big invoice",
        "toRecipients": [{"emailAddress": {"address": "ap@fabrikam.example"}}],
        "body": {"contentType": "Text", "content": "See attached."},
    }
    async with http.post(
        f"{sandbox.graph_url}/me/messages", data=json.dumps(draft_body), headers=json_headers
    ) as response:
        assert response.status == 201
        draft = await response.json()
    attachments_url = f"{sandbox.graph_url}/me/messages/{draft['id']}/attachments"
    small = {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": "terms.txt",
        "contentType": "text/plain",
        "contentBytes": base64.b64encode(b"Net 30").decode(),
    }
    async with http.post(attachments_url, data=json.dumps(small), headers=json_headers) as response:
        assert response.status == 201
        assert (await response.json())["size"] == 6

    big = secrets.token_bytes(3 * 1024 * 1024 + 500_000)
    item = {"AttachmentItem": {"attachmentType": "file", "name": "scan.pdf", "size": 1000}}
    session_url = f"{attachments_url}/createUploadSession"
    async with http.post(session_url, data=json.dumps(item), headers=json_headers) as response:
        assert response.status == 400
        code = (await graph_error(response))["code"]
        assert code == "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize"
    item["AttachmentItem"]["size"] = len(big)
    async with http.post(session_url, data=json.dumps(item), headers=json_headers) as response:
        assert response.status == 201
        session = await response.json()
    assert session["nextExpectedRanges"] == ["0-"]
    upload_url, split = session["uploadUrl"], 2 * 1024 * 1024

    async def put(start: int, end: int) -> aiohttp.ClientResponse:
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"bytes {start}-{end}/{len(big)}",
        }
        chunk = io.BytesIO(big[start : end + 1])
        async with http.put(upload_url, data=chunk, headers=headers) as answer:
            await answer.read()
            return answer

    assert (await put(split, len(big) - 1)).status == 416  # out of order
    first = await put(0, split - 1)
    assert first.status == 200
    last = await put(split, len(big) - 1)
    assert last.status == 201 and "Attachments('" in last.headers["Location"]

    [stored] = await stored_messages(http, sandbox, folder="drafts")
    names = [attachment["name"] for attachment in stored["attachments"]]
    assert names == ["terms.txt", "scan.pdf"]
    assert stored["attachments"][1]["sha256"] == hashlib.sha256(big).hexdigest()
    send_url = f"{sandbox.graph_url}/me/messages/{draft['id']}/send"
    async with http.post(send_url, headers=bearer(signed_in.access_token)) as response:
        assert response.status == 202


async def test_mailbox_without_exchange_online(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    sandbox.state.users[BILLING].mailbox_enabled = False
    async with http.post(
        f"{sandbox.graph_url}/me/sendMail",
        data=mime_body(invoice_mime()),
        headers=bearer(signed_in.access_token),
    ) as response:
        assert response.status == 404
        assert (await graph_error(response))["code"] == "MailboxNotEnabledForRESTAPI"
