"""Gmail API transport: send a MIME message, or store it as a draft (docs/providers.md D).

google-api-python-client, built once from its bundled discovery document (no network),
*builds and validates* each request — URL, upload type, multipart framing — and aiohttp
*sends* it: the event loop never waits on the library's synchronous httplib2, and the library
never sends anything itself, so it cannot retry a send (D7: ``num_retries`` would duplicate
invoices). bench/gmail_transport.py measured this against running the library in a thread
pool; docs/providers.md D says why this was chosen.

    send          users.messages.send   → Message {id, threadId}   → DeliveryReceipt("sent", id)
    create_draft  users.drafts.create   → Draft {id, message{id}}  → DeliveryReceipt("drafted")

How the message travels depends on its size (D1 to D3; at most 36,700,160 bytes):

    up to RAW_LIMIT            JSON body, ``raw`` = base64url of the RFC 822 bytes
    up to RESUMABLE_THRESHOLD  the upload path, ``uploadType=multipart``
    above                      ``uploadType=resumable``: a POST opens a session, its URL
                               (the credential; no Authorization header) takes PUTs of
                               UPLOAD_CHUNK bytes, 308 meaning "more", the last answering
                               with the resource

Only the request that can deliver — the one call, or the last chunk — may end in
``OutcomeUnknown``; a failure before it (opening a session, a chunk that leaves bytes to come)
delivered nothing and is a ``TransientError``. ``about_to_send`` is reported just before that
request. Errors are classified by ``gmail_errors.gmail_error``; network failures by
``transport.transport_error``. Every request passes the ``GoogleOperationGate`` twice: when the
library builds it and when aiohttp is about to send it (docs/privacy.md LU-3). Of an answer we
keep the ids only (LU-4); logs name the job, the operation and the status.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
import ssl
from collections.abc import Collection, Mapping
from typing import Any, Final

import aiohttp
import googleapiclient.discovery
from googleapiclient.http import HttpRequest, MediaIoBaseUpload

from mailbox_worker.clock import Clock, utcnow
from mailbox_worker.errors import (
    DeliveryError,
    OutcomeUnknown,
    PermanentError,
    PolicyViolation,
    TransientError,
)
from mailbox_worker.providers.base import (
    UNTRACKED,
    DeliveryMode,
    DeliveryProgress,
    DeliveryReceipt,
    OutgoingMessage,
)
from mailbox_worker.providers.egress_gate import EgressGate
from mailbox_worker.providers.gmail_errors import gmail_error
from mailbox_worker.providers.google_gate import GoogleOperationGate
from mailbox_worker.providers.transport import (
    TRANSPORT_ERRORS,
    RequestProgress,
    create_session,
    header,
    transport_error,
)

log = logging.getLogger(__name__)

DEFAULT_API_ENDPOINT: Final = "https://gmail.googleapis.com/"
DEFAULT_TIMEOUT: Final = aiohttp.ClientTimeout(total=300, connect=15)
MAXIMUM_MESSAGE: Final = 36_700_160
"""``maxSize`` of messages.send and drafts.create in gmail.v1.json (docs/providers.md D1)."""
RAW_LIMIT: Final = 1024 * 1024
"""Largest message sent as ``raw`` JSON: Google is reported to refuse the metadata path above a
few MB (docs/providers.md F); the upload path has no such limit."""
RESUMABLE_THRESHOLD: Final = 5 * 1024 * 1024
"""Google recommends simple or multipart uploads up to 5 MB, resumable above (D3)."""
UPLOAD_CHUNK: Final = 32 * 256 * 1024
"""8 MiB per PUT of a resumable upload: a multiple of 256 KiB, as Google's protocol asks."""
_RFC822: Final = "message/rfc822"
_HOP_HEADERS: Final = frozenset({"accept-encoding", "content-length", "host"})


class _NoDirectTransport:
    """The ``http`` the Gmail client is built with: it sends nothing, so that no code path can
    make the library do I/O (and retry) itself; requests leave through ``GmailProvider`` only."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        raise PolicyViolation(
            "the Gmail client may build requests but never send them itself",
            code="operation_not_allowed",
        )


def gmail_client(api_endpoint: str, gate: GoogleOperationGate) -> Any:
    """google-api-python-client's Gmail v1 resource from its bundled discovery document,
    pointed at ``api_endpoint`` (D7). Building a request outside the allow-list raises
    ``PolicyViolation`` at once; executing any request raises it too (nothing is sent)."""

    def checked_request(*args: Any, **kwargs: Any) -> HttpRequest:
        request = HttpRequest(*args, **kwargs)
        gate.check(request.method, request.uri)
        return request

    return googleapiclient.discovery.build(
        "gmail",
        "v1",
        http=_NoDirectTransport(),
        static_discovery=True,
        cache_discovery=False,  # the bundled document needs no cache (and this spares a log line)
        client_options={"api_endpoint": api_endpoint},
        requestBuilder=checked_request,
    )


class GmailProvider:
    """``MailProvider`` for Google mailboxes through the Gmail API v1 (``userId`` ``me``).

    Sessions, ``ssl_context``, ``timeout`` and ``egress`` as for ``GraphProvider``. ``clock``
    anchors the "Retry after" times of throttling answers: give the same clock as the worker's.
    """

    name = "google"

    def __init__(
        self,
        gate: GoogleOperationGate,
        api_endpoint: str = DEFAULT_API_ENDPOINT,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
        session: aiohttp.ClientSession | None = None,
        egress: EgressGate | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self._gate = gate
        self.client = gmail_client(api_endpoint, gate)
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        fallback = session.timeout if session is not None else DEFAULT_TIMEOUT
        self._timeout = timeout if timeout is not None else fallback
        self._session = session
        self._owns_session = session is None
        self._egress = egress
        self._clock = clock

    def max_message_bytes(self, mode: DeliveryMode, capabilities: Collection[str]) -> int:
        """Gmail's ``maxSize`` for both methods (D1), whichever path the message takes."""
        return MAXIMUM_MESSAGE

    async def send(
        self,
        access_token: str,
        message: OutgoingMessage,
        *,
        progress: DeliveryProgress = UNTRACKED,
    ) -> DeliveryReceipt:
        """Send ``message`` with users.messages.send; the receipt carries Gmail's message id
        (``None`` if a success answer lacked it: the message was accepted all the same)."""
        _check_size(message)
        messages = self.client.users().messages()
        if len(message.mime) <= RAW_LIMIT:
            request = messages.send(userId="me", body={"raw": _base64url(message.mime)})
        else:
            request = messages.send(userId="me", body={}, media_body=_media(message.mime))
        answer = await self._execute("messages.send", request, access_token, message, progress)
        message_id = _identifier(answer.get("id"))
        return DeliveryReceipt(state="sent", provider_message_id=message_id)

    async def create_draft(
        self,
        access_token: str,
        message: OutgoingMessage,
        *,
        progress: DeliveryProgress = UNTRACKED,
    ) -> DeliveryReceipt:
        """Store ``message`` as a draft with users.drafts.create; the receipt carries the
        draft's id and its message's id. A success answer without a draft id raises
        ``OutcomeUnknown``: the draft may exist."""
        _check_size(message)
        drafts = self.client.users().drafts()
        if len(message.mime) <= RAW_LIMIT:
            body = {"message": {"raw": _base64url(message.mime)}}
            request = drafts.create(userId="me", body=body)
        else:
            request = drafts.create(userId="me", body={}, media_body=_media(message.mime))
        answer = await self._execute("drafts.create", request, access_token, message, None)
        draft_id = _identifier(answer.get("id"))
        inner = answer.get("message")
        message_id = _identifier(inner.get("id")) if isinstance(inner, dict) else None
        if draft_id is None:
            raise OutcomeUnknown(
                "Gmail accepted the draft but returned no id", code="provider_error_ambiguous"
            )
        return DeliveryReceipt(
            state="drafted", provider_message_id=message_id, provider_draft_id=draft_id
        )

    async def close(self) -> None:
        """Close the session if this provider opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _execute(
        self,
        operation: str,
        request: HttpRequest,
        access_token: str,
        message: OutgoingMessage,
        progress: DeliveryProgress | None,
    ) -> dict[str, Any]:
        """Send a built request (one call, or a resumable upload) and return its JSON answer.

        ``progress`` is told ``about_to_send`` before the request that can deliver; ``None``
        for a draft, which delivers nothing (the worker marked the whole call in flight).
        """
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in _HOP_HEADERS
        }
        headers["Authorization"] = f"Bearer {access_token}"
        body = request.body.encode() if isinstance(request.body, str) else request.body or b""
        upload = request.resumable
        if upload is None:
            if progress is not None:
                await progress.about_to_send()
            _, answer = await self._call(
                operation, request.method, request.uri, message.job_id, body, headers,
                delivers=True,
            )  # fmt: skip
            return _json_object(answer)
        size = int(upload.size())
        headers["X-Upload-Content-Type"] = upload.mimetype()
        headers["X-Upload-Content-Length"] = str(size)
        opened, _ = await self._call(
            operation, request.method, request.uri, message.job_id, body, headers,
            delivers=False,
        )  # fmt: skip
        location = header(opened.headers, "Location")
        if not location:
            raise TransientError(
                "Gmail opened an upload session without a Location", code="provider_rejected"
            )
        return await self._upload(operation, location, upload, size, message, progress)

    async def _upload(
        self,
        operation: str,
        location: str,
        upload: MediaIoBaseUpload,
        size: int,
        message: OutgoingMessage,
        progress: DeliveryProgress | None,
    ) -> dict[str, Any]:
        """PUT the message's bytes to a resumable session, resuming where a 308 says."""
        start = 0
        while True:
            chunk = upload.getbytes(start, UPLOAD_CHUNK)
            end = start + len(chunk) - 1
            last = end + 1 >= size
            if last and progress is not None:
                await progress.about_to_send()
            # The session URL is the credential (docs/providers.md F): no Authorization header.
            headers = {"Content-Range": f"bytes {start}-{end}/{size}", "Content-Type": _RFC822}
            response, answer = await self._call(
                operation, "PUT", location, message.job_id, chunk, headers, delivers=last,
                incomplete_ok=True,
            )  # fmt: skip
            if response.status != 308:
                return _json_object(answer)
            received = header(response.headers, "Range")
            following = int(received.rpartition("-")[2]) + 1 if received else 0
            if following <= start and not last:
                raise TransientError("Gmail took none of an upload chunk", code="upload_stalled")
            start = following
            if start >= size:
                raise TransientError(
                    "Gmail asked for more bytes than the message has", code="upload_stalled"
                )

    async def _call(
        self,
        operation: str,
        method: str,
        url: str,
        job_id: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        delivers: bool,
        incomplete_ok: bool = False,
    ) -> tuple[aiohttp.ClientResponse, bytes]:
        """One request; its response and body when 2xx (or 308 with ``incomplete_ok``).

        A failure of a request that cannot deliver (``delivers`` False) is never
        ``OutcomeUnknown``: nothing can have been sent, a retry is safe.
        """
        self._gate.check(method, url)
        session = self._open_session()
        progress = RequestProgress.for_session(session)
        try:
            async with session.request(
                method,
                url,
                data=io.BytesIO(body),  # aiohttp warns about large raw-bytes bodies
                headers=dict(headers),
                ssl=self._ssl,
                timeout=self._timeout,
                allow_redirects=False,
                trace_request_ctx=progress,
            ) as response:
                answer = await _read_answer(response)
        except TRANSPORT_ERRORS as error:
            failure = _unless_delivering(transport_error(error, progress), delivers)
            log.warning("gmail %s job=%s failed: %s", operation, job_id, failure.code)
            raise failure from error
        if 200 <= response.status < 300 or (incomplete_ok and response.status == 308):
            log.info("gmail %s job=%s HTTP %s", operation, job_id, response.status)
            return response, answer
        error_now = self._clock().astimezone(dt.UTC)
        failure = _unless_delivering(
            gmail_error(response.status, response.headers, answer, now=error_now), delivers
        )
        log.warning("gmail %s job=%s HTTP %s %s", operation, job_id, response.status, failure.code)
        raise failure

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = create_session(self._timeout, self._egress)
        return self._session


def _check_size(message: OutgoingMessage) -> None:
    if len(message.mime) > MAXIMUM_MESSAGE:
        raise PermanentError(
            f"the message is {len(message.mime)} bytes; Gmail accepts at most {MAXIMUM_MESSAGE}",
            code="message_too_large",
        )


def _media(mime: bytes) -> MediaIoBaseUpload:
    resumable = len(mime) > RESUMABLE_THRESHOLD
    return MediaIoBaseUpload(
        io.BytesIO(mime), mimetype=_RFC822, chunksize=UPLOAD_CHUNK, resumable=resumable
    )


def _base64url(mime: bytes) -> str:
    return base64.urlsafe_b64encode(mime).decode("ascii")


def _unless_delivering(error: DeliveryError, delivers: bool) -> DeliveryError:
    if delivers or not isinstance(error, OutcomeUnknown):
        return error
    return TransientError(
        f"{error.message} (nothing could be delivered yet)",
        code=error.code,
        provider_status=error.provider_status,
    )


async def _read_answer(response: aiohttp.ClientResponse) -> bytes:
    """The answer's body; ``b""`` when it breaks off (the status is what counts)."""
    try:
        return await response.read()
    except TRANSPORT_ERRORS:
        return b""


def _identifier(value: object) -> str | None:
    """An id from Gmail's answer, kept only if it looks like one (LU-4: ids, nothing else)."""
    if isinstance(value, str) and 0 < len(value) <= 200 and value.isprintable():
        return value
    return None


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return document if isinstance(document, dict) else {}
