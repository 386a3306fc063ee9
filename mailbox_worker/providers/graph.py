"""Microsoft Graph mail transport: send a MIME message, or store it as a draft.

Both operations post the message in its MIME form (``Content-Type: text/plain``, body = base64 of
the RFC 5322 bytes), so our deterministic ``Message-ID`` travels with it:

    send          POST {base}/me/sendMail   → 202, empty body   → DeliveryReceipt("sent")
    create_draft  POST {base}/me/messages   → 201, message JSON → DeliveryReceipt("drafted", id)

A message whose base64 form exceeds Graph's 4 MB request limit (up to the mailbox's 35 MB,
docs/providers.md B2, B3) goes in steps, each reported to the caller's ``DeliveryProgress``:

    1. POST {base}/me/messages with the MIME minus its largest attachments  → draft_created(id)
    2. per detached attachment: an upload session (3 MB and more; PUT {uploadUrl} in ordered
       ranges under 4 MB, without Authorization) or a fileAttachment POST  → draft_completed(id)
    3. send mode: about_to_send(), then POST {base}/me/messages/{id}/send → 202
       draft mode: the draft is the result

Steps 1 and 2 deliver nothing and are safe to redo; only step 3 can deliver. An attempt that
resumes with a complete draft (``OutgoingMessage.draft_complete``) goes straight to step 3;
with an incomplete one, it deletes that draft (DELETE {base}/me/messages/{id}) and starts over.

Failures are classified in ``providers/graph_errors.py``; a message too large for one request
is split in ``providers/graph_mime.py``. Network failures are classified by
``mailbox_worker.providers.transport.transport_error``.

Each request carries a fresh ``client-request-id``; log records name it and Graph's ``request-id``,
never the token, the message content or an address.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import ssl
import uuid
from collections.abc import Collection, Mapping
from typing import Any, Final
from urllib.parse import quote

import aiohttp

from mailbox_worker.errors import (
    OutcomeUnknown,
    PermanentError,
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
from mailbox_worker.providers.graph_errors import graph_error, json_object
from mailbox_worker.providers.graph_errors import request_id as graph_request_id
from mailbox_worker.providers.graph_mime import (
    Attachment,
    detach_attachments,
    largest_mime_for_base64,
)
from mailbox_worker.providers.transport import (
    TRANSPORT_ERRORS,
    RequestProgress,
    create_session,
    transport_error,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://graph.microsoft.com/v1.0"
DEFAULT_TIMEOUT: Final = aiohttp.ClientTimeout(total=120, connect=15)
REQUEST_BODY_LIMIT: Final = 4 * 1024 * 1024
"""Graph refuses request bodies above 4 MB (docs/providers.md B3)."""
MAILBOX_MESSAGE_LIMIT: Final = 35 * 1024 * 1024
"""The largest message a mailbox accepts by default (docs/providers.md B3)."""
UPLOAD_SESSION_MINIMUM: Final = 3 * 1024 * 1024
"""Graph refuses an upload session for a smaller attachment (docs/providers.md B2)."""
UPLOAD_CHUNK: Final = 12 * 320 * 1024
"""Bytes per upload request: under the 4 MB limit, and a multiple of 320 KiB."""


class GraphProvider:
    """``MailProvider`` for Microsoft 365 mailboxes through Microsoft Graph v1.0 (``/me``).

    Without ``session`` the provider opens its own (bounded connections, request-progress
    tracing) on first use, inside the running loop, and ``close()`` closes it; a given session
    is used as is and left open. ``ssl_context`` and ``timeout`` apply to every request
    (default: the system trust store; 120 s in total, 15 s to connect). A session it opens
    sends only where ``egress`` allows (default: anywhere; docs/privacy.md PP-5).
    """

    name = "microsoft"

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
        session: aiohttp.ClientSession | None = None,
        egress: EgressGate | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        fallback = session.timeout if session is not None else DEFAULT_TIMEOUT
        self._timeout = timeout if timeout is not None else fallback
        self._session = session
        self._owns_session = session is None
        self._egress = egress

    def max_message_bytes(self, mode: DeliveryMode, capabilities: Collection[str]) -> int:
        """The mailbox's 35 MB when it may make drafts (``Mail.ReadWrite``, granted with the
        ``draft`` capability): above one request's 4 MB, attachments are uploaded to a draft on
        their own, so the rest of the message must fit in one request (``detach_attachments``).
        A send-only mailbox (``Mail.Send`` alone) has only ``sendMail``: one request, so the
        largest MIME whose base64 fits in 4 MB (docs/providers.md B2, B3, B6)."""
        if mode == "draft" or "draft" in capabilities:
            return MAILBOX_MESSAGE_LIMIT
        return largest_mime_for_base64(REQUEST_BODY_LIMIT)

    async def send(
        self,
        access_token: str,
        message: OutgoingMessage,
        *,
        progress: DeliveryProgress = UNTRACKED,
    ) -> DeliveryReceipt:
        """Send ``message``: with ``sendMail`` when it fits one request (Graph returns no id),
        otherwise through a draft (see the module's docstring; the receipt names the draft)."""
        return await self._deliver(access_token, message, progress, send=True)

    async def create_draft(
        self,
        access_token: str,
        message: OutgoingMessage,
        *,
        progress: DeliveryProgress = UNTRACKED,
    ) -> DeliveryReceipt:
        """Store ``message`` in the mailbox's Drafts folder; the receipt carries the draft id.

        A success answer without a usable ``id`` raises ``OutcomeUnknown``: the draft may exist.
        """
        return await self._deliver(access_token, message, progress, send=False)

    async def close(self) -> None:
        """Close the session if this provider opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _deliver(
        self, access_token: str, message: OutgoingMessage, progress: DeliveryProgress, *, send: bool
    ) -> DeliveryReceipt:
        if len(message.mime) > MAILBOX_MESSAGE_LIMIT:
            raise PermanentError(
                f"the message is {len(message.mime)} bytes; the mailbox accepts at most "
                f"{MAILBOX_MESSAGE_LIMIT}",
                code="message_too_large",
            )
        if message.draft_id is not None:
            if message.draft_complete:
                return await self._finish_draft(
                    access_token, message, message.draft_id, None, progress, send=send
                )
            await self._delete_draft(access_token, message, message.draft_id)
        remainder, detached = detach_attachments(message.mime, REQUEST_BODY_LIMIT)
        if send and not detached:
            await progress.about_to_send()
            await self._post_mime("sendMail", "/me/sendMail", access_token, message, remainder)
            return DeliveryReceipt(state="sent")
        draft_id, web_link = await self._create_draft(access_token, message, remainder)
        if not detached and not send:
            return DeliveryReceipt(state="drafted", provider_message_id=draft_id, web_link=web_link)
        await progress.draft_created(draft_id)
        try:
            for attachment in detached:
                await self._attach(access_token, message, draft_id, attachment)
        except OutcomeUnknown as error:
            # Nothing can have been sent yet and the draft's id is recorded: a retry deletes
            # the incomplete draft and starts over, so this is safe to retry.
            raise TransientError(
                f"adding an attachment to the draft failed: {error.message}",
                code=error.code,
                provider_status=error.provider_status,
            ) from error
        await progress.draft_completed(draft_id)
        return await self._finish_draft(
            access_token, message, draft_id, web_link, progress, send=send
        )

    async def _create_draft(
        self, access_token: str, message: OutgoingMessage, mime: bytes
    ) -> tuple[str, str | None]:
        status, body = await self._post_mime(
            "createDraft", "/me/messages", access_token, message, mime, body_required=True
        )
        draft = json_object(body)
        draft_id, web_link = draft.get("id"), draft.get("webLink")
        if not isinstance(draft_id, str) or not draft_id:
            raise OutcomeUnknown(
                "Graph accepted the draft but returned no id",
                code="provider_error_ambiguous",
                provider_status=status,
            )
        return draft_id, web_link if isinstance(web_link, str) else None

    async def _finish_draft(
        self,
        access_token: str,
        message: OutgoingMessage,
        draft_id: str,
        web_link: str | None,
        progress: DeliveryProgress,
        *,
        send: bool,
    ) -> DeliveryReceipt:
        """The complete draft ``draft_id``: left as the result, or sent."""
        if not send:
            return DeliveryReceipt(
                state="drafted",
                provider_message_id=draft_id,
                provider_draft_id=draft_id,
                web_link=web_link,
            )
        await progress.about_to_send()
        await self._call(
            "sendDraft", "POST", self._message_url(draft_id, "/send"), message.job_id,
            access_token=access_token,
        )  # fmt: skip
        return DeliveryReceipt(state="sent", provider_draft_id=draft_id)

    async def _delete_draft(
        self, access_token: str, message: OutgoingMessage, draft_id: str
    ) -> None:
        """Discard an incomplete draft of an earlier attempt; one already gone is fine."""
        try:
            await self._call(
                "deleteDraft", "DELETE", self._message_url(draft_id, ""), message.job_id,
                access_token=access_token,
            )  # fmt: skip
        except PermanentError as error:
            if error.provider_status != 404:
                raise

    async def _attach(
        self, access_token: str, message: OutgoingMessage, draft_id: str, attachment: Attachment
    ) -> None:
        if len(attachment.data) < UPLOAD_SESSION_MINIMUM:
            document: dict[str, Any] = {
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": attachment.name,
                "contentType": attachment.content_type,
                "contentBytes": base64.b64encode(attachment.data).decode("ascii"),
                "isInline": attachment.inline,
            }
            if attachment.content_id is not None:
                document["contentId"] = attachment.content_id
            await self._call(
                "addAttachment", "POST", self._message_url(draft_id, "/attachments"),
                message.job_id, access_token=access_token, body=json.dumps(document).encode(),
                content_type="application/json",
            )  # fmt: skip
            return
        item: dict[str, Any] = {
            "attachmentType": "file",
            "name": attachment.name,
            "size": len(attachment.data),
            "contentType": attachment.content_type,
            "isInline": attachment.inline,
        }
        if attachment.content_id is not None:
            item["contentId"] = attachment.content_id
        _, body = await self._call(
            "createUploadSession", "POST",
            self._message_url(draft_id, "/attachments/createUploadSession"), message.job_id,
            access_token=access_token, body=json.dumps({"AttachmentItem": item}).encode(),
            content_type="application/json", body_required=True,
        )  # fmt: skip
        upload_url = json_object(body).get("uploadUrl")
        if not isinstance(upload_url, str) or not upload_url.startswith("https://"):
            raise TransientError(
                "Graph opened an upload session without a usable uploadUrl",
                code="provider_rejected",
            )
        total = len(attachment.data)
        for start in range(0, total, UPLOAD_CHUNK):
            chunk = attachment.data[start : start + UPLOAD_CHUNK]
            # The upload URL carries its own credential: no Authorization header (B2).
            await self._call(
                "uploadChunk", "PUT", upload_url, message.job_id, access_token=None,
                body=chunk, content_type="application/octet-stream",
                headers={"Content-Range": f"bytes {start}-{start + len(chunk) - 1}/{total}"},
            )  # fmt: skip

    def _message_url(self, draft_id: str, suffix: str) -> str:
        return f"{self._base_url}/me/messages/{quote(draft_id, safe='')}{suffix}"

    async def _post_mime(
        self,
        operation: str,
        path: str,
        access_token: str,
        message: OutgoingMessage,
        mime: bytes,
        *,
        body_required: bool = False,
    ) -> tuple[int, bytes]:
        """POST the base64 of ``mime`` (``message`` or what ``detach_attachments`` left)."""
        body = base64.b64encode(mime)
        if len(body) > REQUEST_BODY_LIMIT:
            raise PermanentError(
                f"the message is {len(mime)} bytes; its base64 form exceeds Graph's "
                f"{REQUEST_BODY_LIMIT}-byte request limit",
                code="message_too_large",
            )
        return await self._call(
            operation, "POST", self._base_url + path, message.job_id, access_token=access_token,
            body=body, content_type="text/plain", body_required=body_required,
        )  # fmt: skip

    async def _call(
        self,
        operation: str,
        method: str,
        url: str,
        job_id: str,
        *,
        access_token: str | None,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        body_required: bool = False,
    ) -> tuple[int, bytes]:
        """One Graph request; the status and body of a 2xx answer, else a ``DeliveryError``.

        Once a status line has arrived, a body that breaks off only matters when it is a
        success body we need (``body_required``: a draft's id): then the outcome is unknown.
        """
        session = self._open_session()
        client_request_id = str(uuid.uuid4())
        sent_headers = {
            "client-request-id": client_request_id,
            "return-client-request-id": "true",
            **(headers or {}),
        }
        if access_token is not None:
            sent_headers["Authorization"] = f"Bearer {access_token}"
        if content_type is not None:
            sent_headers["Content-Type"] = content_type
        progress = RequestProgress.for_session(session)
        try:
            async with session.request(
                method,
                url,
                data=io.BytesIO(body),  # aiohttp warns about large raw-bytes bodies
                headers=sent_headers,
                ssl=self._ssl,
                timeout=self._timeout,
                allow_redirects=False,
                trace_request_ctx=progress,
            ) as response:
                answer = await _read_answer(response, body_required)
        except TRANSPORT_ERRORS as error:
            failure = transport_error(error, progress)
            log.warning(
                "graph %s job=%s client-request-id=%s failed: %s",
                operation, job_id, client_request_id, failure.code,
            )  # fmt: skip
            raise failure from error
        request_id = graph_request_id(response.headers)
        if 200 <= response.status < 300:
            log.info(
                "graph %s job=%s HTTP %s request-id=%s client-request-id=%s",
                operation, job_id, response.status, request_id, client_request_id,
            )  # fmt: skip
            return response.status, answer
        failure = graph_error(response.status, response.headers, answer)
        log.warning(
            "graph %s job=%s HTTP %s %s request-id=%s client-request-id=%s",
            operation, job_id, response.status, failure.code, request_id, client_request_id,
        )  # fmt: skip
        raise failure

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = create_session(self._timeout, self._egress)
        return self._session


async def _read_answer(response: aiohttp.ClientResponse, body_required: bool) -> bytes:
    """The answer's body, or ``b""`` when it breaks off and is not a success body we need."""
    try:
        return await response.read()
    except TRANSPORT_ERRORS:
        if body_required and 200 <= response.status < 300:
            raise
        return b""
