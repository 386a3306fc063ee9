"""The sandbox's Gmail API through the unmodified google-api-python-client and google-auth,
only pointed at the sandbox (docs/providers.md D, F).

The sandbox runs in the test's event loop; the client is synchronous, so it runs in a thread.
"""

from __future__ import annotations

import datetime
import io
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import googleapiclient.discovery_cache
import pytest
import requests
from googleapiclient.http import MediaIoBaseUpload

from mailbox_worker.sandbox import Sandbox
from mailbox_worker.sandbox.google.gmail import DRAFT_SCOPES, SEND_SCOPES
from mailbox_worker.sandbox.google.gmail_errors import retry_time

from .gmail_helpers import (
    GmailClients,
    execute,
    google_error,
    http_error,
    invoice,
    raw_field,
    raw_of,
    set_limits,
    stored,
)
from .google_helpers import COMPOSE, USER

DAY = 24 * 60 * 60
INSUFFICIENT = {
    "error": {
        "code": 403,
        "message": "Request had insufficient authentication scopes.",
        "errors": [
            {
                "message": "Insufficient Permission",
                "domain": "global",
                "reason": "insufficientPermissions",
            }
        ],
        "status": "PERMISSION_DENIED",
    }
}


@pytest.fixture
def clients(
    sandbox: Sandbox, http: aiohttp.ClientSession, session: requests.Session
) -> Iterator[GmailClients]:
    opened = GmailClients(sandbox, http, session)
    try:
        yield opened
    finally:
        opened.close()


def sending_limit_body(until: float) -> dict[str, Any]:
    message = f"User-rate limit exceeded.  Retry after {retry_time(until)} (Mail sending)"
    return google_error(429, message, "rateLimitExceeded", "RESOURCE_EXHAUSTED", "usageLimits")


# -- send and drafts -------------------------------------------------------------------------


async def test_a_send_only_mailbox_sends_and_the_message_keeps_its_message_id(
    sandbox: Sandbox, http: aiohttp.ClientSession, clients: GmailClients
) -> None:
    gmail, _ = await clients.connect(untick=(COMPOSE,))
    message, message_id = invoice("4711")
    body = {"raw": raw_field(message)}
    sent = await execute(gmail.users().messages().send(userId="me", body=body))
    assert sent == {"id": sent["id"], "threadId": sent["id"], "labelIds": ["SENT"]}
    assert len(sent["id"]) == 16
    [record] = await stored(http, sandbox, user=USER)
    assert (record["id"], record["label"], record["upload"]) == (sent["id"], "SENT", "raw")
    assert (record["message_id"], record["to"]) == (message_id, ["customer@example.com"])
    assert await raw_of(http, sandbox, sent["id"]) == message
    assert sandbox.state.counters()["gmail.messages.send"] == 1
    # The send-only grant allows nothing of the drafts (docs/providers.md D1, D6).
    draft = {"message": {"raw": raw_field(message)}}
    status, error, _ = await http_error(gmail.users().drafts().create(userId="me", body=draft))
    assert (status, error) == (403, INSUFFICIENT)


async def test_a_drafts_enabled_mailbox_creates_and_sends_drafts(
    sandbox: Sandbox, http: aiohttp.ClientSession, clients: GmailClients
) -> None:
    gmail, _ = await clients.connect()
    message, message_id = invoice("draft-1")
    body = {"message": {"raw": raw_field(message)}}
    draft = await execute(gmail.users().drafts().create(userId="me", body=body))
    assert draft["id"].startswith("r-")
    assert draft["message"]["labelIds"] == ["DRAFT"]
    [record] = await stored(http, sandbox, label="DRAFT")
    assert (record["draft_id"], record["message_id"]) == (draft["id"], message_id)
    sent = await execute(gmail.users().drafts().send(userId="me", body={"id": draft["id"]}))
    assert sent == {**draft["message"], "labelIds": ["SENT"]}
    [record] = await stored(http, sandbox, label="SENT")
    assert (record["draft_id"], record["message_id"]) == (None, message_id)
    assert await raw_of(http, sandbox, sent["id"]) == message
    # The draft is gone once sent (docs/providers.md D4: notFound).
    status, error, _ = await http_error(
        gmail.users().drafts().send(userId="me", body={"id": draft["id"]})
    )
    assert (status, error) == (
        404,
        google_error(404, "Requested entity was not found.", "notFound", "NOT_FOUND"),
    )


async def test_a_message_without_a_message_id_gets_one(
    sandbox: Sandbox, http: aiohttp.ClientSession, clients: GmailClients
) -> None:
    gmail, _ = await clients.connect()
    message = b"To: customer@example.com\r\nSubject: no id\r\n\r\nHello\r\n"
    sent = await execute(
        gmail.users().messages().send(userId="me", body={"raw": raw_field(message)})
    )
    [record] = await stored(http, sandbox)
    assert record["message_id"].endswith("@mail.gmail.com>")
    assert (await raw_of(http, sandbox, sent["id"])).endswith(message)


# -- uploads (docs/providers.md D3, D7) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("upload", "size"), [("media", 50_000), ("multipart", 15_000_000), ("resumable", 15_000_000)]
)
async def test_uploads_arrive_byte_equal(
    sandbox: Sandbox,
    http: aiohttp.ClientSession,
    clients: GmailClients,
    upload: str,
    size: int,
) -> None:
    gmail, _ = await clients.connect(untick=(COMPOSE,))
    message, message_id = invoice(upload, attachment_size=size)  # 15 MB in base64: ~20 MB
    media = MediaIoBaseUpload(
        io.BytesIO(message),
        mimetype="message/rfc822",
        chunksize=5 * 1024 * 1024,
        resumable=upload == "resumable",
    )
    body: dict[str, Any] | None = {} if upload == "multipart" else None
    sent = await execute(gmail.users().messages().send(userId="me", body=body, media_body=media))
    assert sent["labelIds"] == ["SENT"]
    [record] = await stored(http, sandbox)
    assert (record["upload"], record["message_id"]) == (upload, message_id)
    assert await raw_of(http, sandbox, sent["id"]) == message
    counters = sandbox.state.counters()
    assert counters["gmail.messages.send"] == 1
    if upload == "resumable":
        assert counters["gmail.upload.chunk"] == -(-len(message) // (5 * 1024 * 1024))


async def test_drafts_through_the_upload_paths(
    sandbox: Sandbox, http: aiohttp.ClientSession, clients: GmailClients
) -> None:
    gmail, _ = await clients.connect()
    message, message_id = invoice("resumable-draft", attachment_size=300_000)
    media = MediaIoBaseUpload(
        io.BytesIO(message), mimetype="message/rfc822", chunksize=256 * 1024, resumable=True
    )
    draft = await execute(gmail.users().drafts().create(userId="me", media_body=media))
    replacement, replacement_id = invoice("replaced")
    media = MediaIoBaseUpload(io.BytesIO(replacement), mimetype="message/rfc822")
    request = gmail.users().drafts().send(userId="me", body={"id": draft["id"]}, media_body=media)
    sent = await execute(request)
    [record] = await stored(http, sandbox)
    assert (record["id"], record["label"], record["upload"]) == (sent["id"], "SENT", "multipart")
    assert record["message_id"] == replacement_id != message_id
    assert await raw_of(http, sandbox, sent["id"]) == replacement


async def test_the_35_mb_limit(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    token = await _bearer(sandbox, http)
    url = f"{sandbox.base_url}/upload/gmail/v1/users/me/messages/send"
    too_large = google_error(
        413, "Media larger than: 36700160", "uploadTooLarge", "INVALID_ARGUMENT"
    )
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "message/rfc822"}
    body = io.BytesIO(b"x" * (36_700_160 + 1))
    async with http.post(url, params={"uploadType": "media"}, data=body, headers=headers) as answer:
        assert (answer.status, await answer.json()) == (413, too_large)
    start = {
        "Authorization": f"Bearer {token}",
        "X-Upload-Content-Type": "message/rfc822",
        "X-Upload-Content-Length": str(36_700_160 + 1),
    }
    async with http.post(url, params={"uploadType": "resumable"}, headers=start) as answer:
        assert (answer.status, await answer.json()) == (413, too_large)
    assert sandbox.state.gmail.message_list() == []


async def test_multipart_with_crlf_framing_and_a_missing_upload_type(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    token = await _bearer(sandbox, http)
    message, message_id = invoice("crlf")
    body = b"\r\n".join(
        [
            b"--frontier",
            b"Content-Type: application/json; charset=UTF-8",
            b"",
            b'{"threadId": "18c0ffee00000000"}',
            b"--frontier",
            b"Content-Type: message/rfc822",
            b"",
            message,
            b"--frontier--",
        ]
    )
    url = f"{sandbox.base_url}/upload/gmail/v1/users/me/messages/send"
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": 'multipart/related; boundary="frontier"',
    }
    async with http.post(
        url, params={"uploadType": "multipart"}, data=body, headers=headers
    ) as answer:
        assert answer.status == 200, await answer.text()
        sent = await answer.json()
    assert sent["threadId"] == "18c0ffee00000000"
    assert await raw_of(http, sandbox, sent["id"]) == message
    async with http.post(url, data=message, headers=headers) as answer:
        assert answer.status == 400
        error = (await answer.json())["error"]
    assert error["errors"][0]["reason"] == "badRequest"
    assert error["message"].startswith("Upload requests must include an uploadType")
    [record] = await stored(http, sandbox)
    assert record["message_id"] == message_id


async def test_a_resumable_session_reports_progress_and_resumes(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    token = await _bearer(sandbox, http)
    message, _ = invoice("raw-resumable", attachment_size=10_000)
    url = f"{sandbox.base_url}/resumable/upload/gmail/v1/users/me/messages/send"
    start = {"Authorization": f"Bearer {token}", "X-Upload-Content-Type": "message/rfc822"}
    async with http.post(url, params={"uploadType": "resumable"}, headers=start) as answer:
        assert answer.status == 200
        session_url = answer.headers["Location"]
    assert "upload_id=" in session_url
    total = len(message)
    first = {"Content-Range": f"bytes 0-999/{total}"}
    async with http.put(session_url, data=message[:1000], headers=first) as answer:
        assert (answer.status, answer.headers["Range"]) == (308, "bytes=0-999")
    # A chunk past a gap is not taken; the progress query says where to resume.
    gap = {"Content-Range": f"bytes 2000-2999/{total}"}
    async with http.put(session_url, data=message[2000:3000], headers=gap) as answer:
        assert (answer.status, answer.headers["Range"]) == (308, "bytes=0-999")
    async with http.put(session_url, headers={"Content-Range": f"bytes */{total}"}) as answer:
        assert (answer.status, answer.headers["Range"]) == (308, "bytes=0-999")
    rest = {"Content-Range": f"bytes 1000-{total - 1}/{total}"}
    async with http.put(session_url, data=message[1000:], headers=rest) as answer:
        assert answer.status == 200
        sent = await answer.json()
    assert await raw_of(http, sandbox, sent["id"]) == message
    async with http.put(session_url, headers={"Content-Range": f"bytes */{total}"}) as answer:
        assert answer.status == 404


# -- authentication, scopes and request errors (docs/providers.md D4) --------------------------


async def test_a_bad_token_is_401_and_an_expired_one_is_refreshed_by_google_auth(
    sandbox: Sandbox, http: aiohttp.ClientSession, clients: GmailClients
) -> None:
    gmail, creds = await clients.connect()
    message, _ = invoice()
    async with http.post(
        f"{sandbox.base_url}/gmail/v1/users/me/messages/send",
        json={"raw": raw_field(message)},
        headers={"Authorization": "Bearer ya29.not-a-token"},
    ) as answer:
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"].startswith("Bearer ")
        error = (await answer.json())["error"]
    assert (error["code"], error["status"]) == (401, "UNAUTHENTICATED")
    assert error["errors"] == [
        {
            "message": "Invalid Credentials",
            "domain": "global",
            "reason": "authError",
            "location": "Authorization",
            "locationType": "header",
        }
    ]
    old_token = creds.token
    sandbox.state.advance(3600)
    sent = await execute(
        gmail.users().messages().send(userId="me", body={"raw": raw_field(message)})
    )
    assert sent["labelIds"] == ["SENT"]
    assert creds.token != old_token
    assert sandbox.state.counters()["google.token.refresh_token"] == 1


async def test_request_errors(
    sandbox: Sandbox, http: aiohttp.ClientSession, clients: GmailClients
) -> None:
    gmail, _ = await clients.connect()
    messages = gmail.users().messages()
    no_raw = google_error(
        400,
        "'raw' RFC822 payload message string or uploading message via /upload/* URL required",
        "invalidArgument",
        "INVALID_ARGUMENT",
    )
    assert (await http_error(messages.send(userId="me", body={})))[:2] == (400, no_raw)
    nobody, _ = invoice(to=None)
    no_recipient = google_error(
        400, "Recipient address required", "invalidArgument", "INVALID_ARGUMENT"
    )
    request = messages.send(userId="me", body={"raw": raw_field(nobody)})
    assert (await http_error(request))[:2] == (400, no_recipient)
    bad_to, _ = invoice(to="not an address")
    request = messages.send(userId="me", body={"raw": raw_field(bad_to)})
    status, error, _ = await http_error(request)
    assert (status, error["error"]["message"]) == (400, "Invalid To header")
    other = messages.send(userId="someone@else.example", body={"raw": raw_field(bad_to)})
    status, error, _ = await http_error(other)
    assert (status, error["error"]["status"]) == (403, "PERMISSION_DENIED")
    unknown = gmail.users().drafts().send(userId=USER, body={"id": "r-1"})
    assert (await http_error(unknown))[0] == 404
    assert sandbox.state.gmail.message_list() == []


def test_scopes_are_those_of_the_discovery_document() -> None:
    document = json.loads(googleapiclient.discovery_cache.get_static_doc("gmail", "v1"))
    resources = document["resources"]["users"]["resources"]
    assert set(resources["messages"]["methods"]["send"]["scopes"]) == SEND_SCOPES
    assert set(resources["drafts"]["methods"]["create"]["scopes"]) == DRAFT_SCOPES
    assert set(resources["drafts"]["methods"]["send"]["scopes"]) == DRAFT_SCOPES
    for method in (
        resources["messages"]["methods"]["send"],
        resources["drafts"]["methods"]["create"],
    ):
        assert method["mediaUpload"]["maxSize"] == "36700160"


# -- limits (docs/providers.md D5) --------------------------------------------------------------


async def test_the_daily_sending_limit_answers_its_body_and_resets_with_the_window(
    sandbox: Sandbox, http: aiohttp.ClientSession, clients: GmailClients
) -> None:
    gmail, _ = await clients.connect()
    assert (await set_limits(http, sandbox, daily_sending_limit=2))["daily_sending_limit"] == 2
    first_sent_at = sandbox.state.now()
    for job in ("1", "2"):
        message, _ = invoice(job)
        await execute(gmail.users().messages().send(userId="me", body={"raw": raw_field(message)}))
    # A draft is not a sent message; sending it is.
    third, _ = invoice("3")
    draft = await execute(
        gmail.users().drafts().create(userId="me", body={"message": {"raw": raw_field(third)}})
    )
    second_sent_by = sandbox.state.now()
    status, error, _ = await http_error(
        gmail.users().drafts().send(userId="me", body={"id": draft["id"]})
    )
    assert status == 429
    retry_after = error["error"]["message"].split("Retry after ")[1].split(" ")[0]
    # A day after the first send, which happened between the two readings of the clock.
    # (Named to the millisecond, rounded up: at most a millisecond later.)
    assert (
        first_sent_at + DAY - MILLISECOND
        <= _moment(retry_after)
        <= second_sent_by + DAY + MILLISECOND
    )
    assert error == sending_limit_body(_moment(retry_after))
    assert len(await stored(http, sandbox, label="SENT")) == 2
    sandbox.state.advance(_moment(retry_after) - sandbox.state.now())
    sent = await execute(gmail.users().drafts().send(userId="me", body={"id": draft["id"]}))
    assert sent["labelIds"] == ["SENT"]
    assert sandbox.state.counters()["gmail.throttled.sending_limit"] == 1


async def test_the_sending_limit_can_be_noticed_late(
    sandbox: Sandbox, http: aiohttp.ClientSession, clients: GmailClients
) -> None:
    gmail, _ = await clients.connect(untick=(COMPOSE,))
    limits = await set_limits(
        http, sandbox, daily_sending_limit=1, sending_limit_detection_delay=300
    )
    assert limits == {
        "daily_sending_limit": 1,
        "units_per_minute": 15_000,
        "sending_limit_detection_delay": 300.0,
        "sent_in_window": 0,
    }
    first_sent_at = sandbox.state.now()
    for job in ("1", "2"):
        message, _ = invoice(job)
        await execute(gmail.users().messages().send(userId="me", body={"raw": raw_field(message)}))
    both_sent_by = sandbox.state.now()
    assert [record["over_limit"] for record in await stored(http, sandbox)] == [False, True]
    sandbox.state.advance(300)
    message, _ = invoice("3")
    request = gmail.users().messages().send(userId="me", body={"raw": raw_field(message)})
    status, error, _ = await http_error(request)
    # Both messages count: the one slot frees when the second (sent over the limit, a moment
    # after the first) leaves the rolling day.
    second_leaves = _moment(error["error"]["message"].split("Retry after ")[1].split(" ")[0])
    assert status == 429
    assert first_sent_at + DAY - MILLISECOND <= second_leaves <= both_sent_by + DAY + MILLISECOND
    assert (await set_limits(http, sandbox))["sent_in_window"] == 2


async def test_quota_units_per_user_per_minute(
    sandbox: Sandbox, http: aiohttp.ClientSession, clients: GmailClients
) -> None:
    gmail, _ = await clients.connect()
    await set_limits(http, sandbox, units_per_minute=210)
    message, _ = invoice()
    body = {"raw": raw_field(message)}
    start = sandbox.state.now()
    await execute(gmail.users().messages().send(userId="me", body=body))  # 100 units
    await execute(gmail.users().drafts().create(userId="me", body={"message": body}))  # 10
    await execute(gmail.users().messages().send(userId="me", body=body))  # 100: 210
    status, error, _ = await http_error(
        gmail.users().drafts().create(userId="me", body={"message": body})
    )
    assert status == 429
    entry = error["error"]["errors"][0]
    assert (entry["domain"], entry["reason"]) == ("usageLimits", "userRateLimitExceeded")
    assert error["error"]["status"] == "RESOURCE_EXHAUSTED"
    retry_after = error["error"]["message"].removeprefix("User-rate limit exceeded.  Retry after ")
    # A minute after the first send, which happened between ``start`` and now.
    assert (
        start + 60 - MILLISECOND <= _moment(retry_after) <= sandbox.state.now() + 60 + MILLISECOND
    )
    sandbox.state.advance(_moment(retry_after) - sandbox.state.now())
    await execute(gmail.users().drafts().create(userId="me", body={"message": body}))
    assert sandbox.state.counters()["gmail.throttled.user_rate"] == 1


# -- faults -------------------------------------------------------------------------------------


async def test_injected_faults_answer_in_googles_format(
    sandbox: Sandbox, http: aiohttp.ClientSession, clients: GmailClients
) -> None:
    gmail, _ = await clients.connect()
    message, message_id = invoice()
    body = {"raw": raw_field(message)}
    sandbox.state.queue_fault("gmail.messages.send", "status", status=429, retry_after=120)
    before = sandbox.state.now()
    status, error, headers = await http_error(gmail.users().messages().send(userId="me", body=body))
    after = sandbox.state.now()
    assert (status, headers["retry-after"]) == (429, "120")
    until = _moment(
        error["error"]["message"].removeprefix("User-rate limit exceeded.  Retry after ")
    )
    assert before + 120 - MILLISECOND <= until <= after + 120 + MILLISECOND
    assert error["error"]["errors"][0]["reason"] == "userRateLimitExceeded"
    sandbox.state.queue_fault("gmail.messages.send", "accept_then_status", status=503)
    status, error, _ = await http_error(gmail.users().messages().send(userId="me", body=body))
    assert (status, error["error"]["errors"][0]["reason"]) == (503, "backendError")
    # The ambiguous case: Google's answer was an error, yet the message went out.
    [record] = await stored(http, sandbox)
    assert record["message_id"] == message_id


# -- helpers ------------------------------------------------------------------------------------


MILLISECOND = 0.001
"""The answers' times are cut to milliseconds."""


def _moment(rfc3339: str) -> float:
    return datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


async def _bearer(sandbox: Sandbox, http: aiohttp.ClientSession) -> str:
    """A send-scoped access token minted in-process (the tests above get theirs by consent)."""
    google = sandbox.state.google
    grant, _ = google.consent(USER, "sandbox-google-client", [*sorted(SEND_SCOPES)])
    return google.issue_access_token(grant, grant.scopes, 3599)
