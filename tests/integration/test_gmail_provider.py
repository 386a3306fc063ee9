"""GmailProvider against the sandbox's Gmail API: requests built by the unmodified
google-api-python-client, sent by aiohttp, every one through the Google operation gate.

Tokens come from a real consent at the sandbox (granular: a send-only grant unticks
gmail.compose). Nothing here reads the wall clock: "Retry after" times are the sandbox's clock,
which the provider is given.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
import requests

from mailbox_worker.errors import (
    AccessTokenRejected,
    OutcomeUnknown,
    PermanentError,
    PolicyViolation,
    Throttled,
)
from mailbox_worker.providers.base import OutgoingMessage
from mailbox_worker.providers.gmail import UPLOAD_CHUNK, GmailProvider
from mailbox_worker.providers.google_gate import (
    GoogleEndpoints,
    GoogleOperationGate,
    gate_session,
)
from mailbox_worker.sandbox import Sandbox
from mailbox_worker.tokens.oauth_sessions import close_session, new_session

from .sandbox.gmail_helpers import invoice, raw_of, stored
from .sandbox.google_helpers import COMPOSE, USER, connect

MB = 1024 * 1024


@dataclass
class RecordingReporter:
    """Records what the gate refused."""

    attempts: list[tuple[str, str]] = field(default_factory=list)

    def policy_violation(self, rule: str, attempted: str) -> None:
        self.attempts.append((rule, attempted))


@dataclass
class Steps:
    """A DeliveryProgress that records the hooks' order."""

    calls: list[str] = field(default_factory=list)

    async def draft_created(self, draft_id: str) -> None:
        self.calls.append("draft_created")

    async def draft_completed(self, draft_id: str) -> None:
        self.calls.append("draft_completed")

    async def about_to_send(self) -> None:
        self.calls.append("about_to_send")


@dataclass
class Gmail:
    provider: GmailProvider
    gate: GoogleOperationGate
    reporter: RecordingReporter
    sandbox: Sandbox
    http: aiohttp.ClientSession
    requests_session: requests.Session

    async def token(self, *, drafts: bool = True) -> str:
        untick = () if drafts else (COMPOSE,)
        tokens = await connect(self.http, self.requests_session, self.sandbox, untick=untick)
        return str(tokens["access_token"])


def endpoints(sandbox: Sandbox) -> GoogleEndpoints:
    return GoogleEndpoints(
        gmail=sandbox.gmail_api_endpoint,
        token=sandbox.google_token_url,
        revoke=sandbox.google_revoke_url,
        userinfo=f"{sandbox.base_url}/v1/userinfo",
    )


@pytest.fixture
async def gmail(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> AsyncIterator[Gmail]:
    reporter = RecordingReporter()
    gate = GoogleOperationGate(endpoints(sandbox), reporter)
    provider = GmailProvider(
        gate,
        sandbox.gmail_api_endpoint,
        ssl_context=ssl.create_default_context(cafile=str(sandbox.ca_path)),
        clock=sandbox.state.clock.utcnow,
    )
    try:
        yield Gmail(provider, gate, reporter, sandbox, http, requests_session)
    finally:
        await provider.close()


def outgoing(job: str, attachment_size: int = 2_000) -> OutgoingMessage:
    mime, message_id = invoice(job, attachment_size)
    return OutgoingMessage(job_id=job, mime=mime, message_id=message_id)


async def test_a_send_only_mailbox_sends_with_the_jobs_message_id(gmail: Gmail) -> None:
    token = await gmail.token(drafts=False)
    message = outgoing("send-1")
    steps = Steps()
    receipt = await gmail.provider.send(token, message, progress=steps)
    [record] = await stored(gmail.http, gmail.sandbox, label="SENT")
    assert receipt.state == "sent"
    assert receipt.provider_message_id == record["id"]
    assert (record["message_id"], record["upload"]) == (message.message_id, "raw")
    assert await raw_of(gmail.http, gmail.sandbox, record["id"]) == message.mime
    assert steps.calls == ["about_to_send"]
    # gmail.send alone allows no draft (docs/providers.md D1): a permanent, explicit refusal.
    with pytest.raises(PermanentError) as refused:
        await gmail.provider.create_draft(token, outgoing("draft-refused"))
    assert (refused.value.code, refused.value.provider_status) == ("scope_missing", 403)


async def test_a_drafts_enabled_mailbox_creates_drafts(gmail: Gmail) -> None:
    token = await gmail.token()
    message = outgoing("draft-1")
    steps = Steps()
    receipt = await gmail.provider.create_draft(token, message, progress=steps)
    [record] = await stored(gmail.http, gmail.sandbox, label="DRAFT")
    assert receipt.state == "drafted"
    assert (receipt.provider_draft_id, receipt.provider_message_id) == (
        record["draft_id"],
        record["id"],
    )
    assert record["message_id"] == message.message_id
    assert steps.calls == []  # a draft delivers nothing to anyone
    assert await stored(gmail.http, gmail.sandbox, label="SENT") == []


@pytest.mark.parametrize(
    ("attachment_size", "upload"), [(3 * MB, "multipart"), (20 * MB, "resumable")]
)
async def test_large_invoices_take_the_upload_path_and_arrive_byte_equal(
    gmail: Gmail, attachment_size: int, upload: str
) -> None:
    token = await gmail.token()
    message = outgoing(f"large-{upload}", attachment_size)
    receipt = await gmail.provider.send(token, message)
    [record] = await stored(gmail.http, gmail.sandbox, label="SENT")
    assert (record["id"], record["upload"]) == (receipt.provider_message_id, upload)
    assert record["message_id"] == message.message_id
    assert await raw_of(gmail.http, gmail.sandbox, record["id"]) == message.mime
    chunks = gmail.sandbox.state.counters().get("gmail.upload.chunk", 0)
    expected = math.ceil(len(message.mime) / UPLOAD_CHUNK) if upload == "resumable" else 0
    assert chunks == expected
    draft = await gmail.provider.create_draft(token, outgoing(f"large-draft-{upload}", 6 * MB))
    [drafted] = await stored(gmail.http, gmail.sandbox, label="DRAFT")
    assert (drafted["draft_id"], drafted["upload"]) == (draft.provider_draft_id, "resumable")


async def test_an_operation_off_the_allow_list_never_leaves(gmail: Gmail) -> None:
    before = gmail.sandbox.state.counters()
    with pytest.raises(PolicyViolation) as refused:
        gmail.provider.client.users().messages().list(userId="me")
    assert refused.value.code == "operation_not_allowed"
    with pytest.raises(PolicyViolation):
        gmail.provider.client.users().getProfile(userId="me")
    # The OAuth side: a requests session gated like google-auth's.
    session = gate_session(new_session(str(gmail.sandbox.ca_path)), gmail.gate)
    try:
        with pytest.raises(PolicyViolation):
            session.get(f"{gmail.sandbox.base_url}/gmail/v1/users/me/messages")
    finally:
        close_session(session)
    assert gmail.sandbox.state.counters() == before
    assert [attempt for _, attempt in gmail.reporter.attempts] == [
        f"GET 127.0.0.1:{gmail.sandbox.port}/gmail/v1/users/{{userId}}/messages",
        f"GET 127.0.0.1:{gmail.sandbox.port}/gmail/v1/users/{{userId}}/profile",
        f"GET 127.0.0.1:{gmail.sandbox.port}/gmail/v1/users/{{userId}}/messages",
    ]


async def test_a_user_rate_limit_defers_until_the_time_google_names(gmail: Gmail) -> None:
    token = await gmail.token()
    gmail.sandbox.state.queue_fault("gmail.messages.send", "status", status=429, retry_after=120)
    before = gmail.sandbox.state.clock.utcnow()
    with pytest.raises(Throttled) as throttled:
        await gmail.provider.send(token, outgoing("throttled"))
    after = gmail.sandbox.state.clock.utcnow()
    assert throttled.value.code == "throttled"
    retry_after = throttled.value.retry_after
    assert retry_after is not None
    # "Retry after T" with T = the sandbox's now + 120 s, to the millisecond.
    elapsed = (after - before).total_seconds()
    assert 120 - elapsed - 0.001 <= retry_after <= 120.001


async def test_the_daily_sending_limit_throttles_until_the_window_reopens(gmail: Gmail) -> None:
    token = await gmail.token()
    gmail.sandbox.state.gmail.set_limits(USER, daily_sending_limit=1)
    await gmail.provider.send(token, outgoing("first"))
    with pytest.raises(Throttled) as throttled:
        await gmail.provider.send(token, outgoing("second"))
    assert (throttled.value.code, throttled.value.provider_status) == ("sending_limit", 429)
    assert throttled.value.retry_after is not None
    assert 24 * 3600 - 60 < throttled.value.retry_after <= 24 * 3600


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("status", 500, "provider_error_ambiguous"),
        ("status", 503, "provider_error_ambiguous"),
        ("accept_then_reset", 200, "connection_lost"),
    ],
)
async def test_an_ambiguous_send_is_an_unknown_outcome(
    gmail: Gmail, kind: str, status: int, code: str
) -> None:
    token = await gmail.token()
    gmail.sandbox.state.queue_fault("gmail.messages.send", kind, status=status)
    with pytest.raises(OutcomeUnknown) as unknown:
        await gmail.provider.send(token, outgoing("ambiguous"))
    assert unknown.value.code == code


async def test_only_the_last_chunk_of_an_upload_is_marked_as_delivering(gmail: Gmail) -> None:
    token = await gmail.token()
    message = outgoing("chunked", 20 * MB)
    chunks_before_send: list[int] = []

    class Watching(Steps):
        async def about_to_send(self) -> None:
            chunks_before_send.append(gmail.sandbox.state.counters().get("gmail.upload.chunk", 0))

    await gmail.provider.send(token, message, progress=Watching())
    total = math.ceil(len(message.mime) / UPLOAD_CHUNK)
    # Chunks before the last deliver nothing: a failure there is safely retried.
    assert chunks_before_send == [total - 1]
    assert gmail.sandbox.state.counters()["gmail.upload.chunk"] == total


async def test_an_expired_access_token_is_rejected_for_a_refresh(gmail: Gmail) -> None:
    token = await gmail.token()
    gmail.sandbox.state.advance(3600)
    with pytest.raises(AccessTokenRejected) as rejected:
        await gmail.provider.send(token, outgoing("late"))
    assert rejected.value.provider_status == 401
    assert await stored(gmail.http, gmail.sandbox) == []


def test_the_gate_allows_exactly_the_listed_operations(sandbox: Sandbox) -> None:
    gate = GoogleOperationGate(endpoints(sandbox), RecordingReporter())
    base = sandbox.base_url
    allowed = [
        ("POST", f"{base}/gmail/v1/users/me/messages/send?alt=json"),
        ("POST", f"{base}/upload/gmail/v1/users/me/drafts?uploadType=resumable"),
        ("PUT", f"{base}/upload/gmail/v1/users/me/drafts?uploadType=resumable&upload_id=x"),
        ("POST", f"{base}/gmail/v1/users/me/drafts/send"),
        ("POST", sandbox.google_token_url),
        ("POST", sandbox.google_revoke_url),
    ]
    for method, url in allowed:
        assert gate.check(method, url)
    refused = [
        ("GET", f"{base}/gmail/v1/users/me/messages"),
        ("GET", f"{base}/gmail/v1/users/me/drafts/r-1"),
        ("DELETE", f"{base}/gmail/v1/users/me/messages/1"),
        ("PUT", f"{base}/upload/gmail/v1/users/me/drafts?uploadType=resumable"),
        ("POST", "https://elsewhere.example/gmail/v1/users/me/messages/send"),
        ("GET", sandbox.google_revoke_url),
    ]
    for method, url in refused:
        with pytest.raises(PolicyViolation):
            gate.check(method, url)
