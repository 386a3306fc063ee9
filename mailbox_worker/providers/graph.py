"""Microsoft Graph mail transport: send a MIME message, or store it as a draft.

Both operations post the message in its MIME form (``Content-Type: text/plain``, body = base64 of
the RFC 5322 bytes), so our deterministic ``Message-ID`` travels with it:

    send          POST {base}/me/sendMail   → 202, empty body   → DeliveryReceipt("sent")
    create_draft  POST {base}/me/messages   → 201, message JSON → DeliveryReceipt("drafted", id)

Every failure leaves as a ``mailbox_worker.errors.DeliveryError`` with ``provider_status`` set
(``None`` when no answer came). Graph answers are classified by ``graph_error`` from the status
and the JSON ``error.code`` — never from the message text, which may quote addresses:

    HTTP      Graph error.code                      raised             code
    429       (any)                                 Throttled          throttled (+ retry_after)
    503       (any)                                 TransientError     service_unavailable (+ r_a)
    4xx       ErrorInvalidRecipients                PermanentError     invalid_recipients
    4xx       ErrorMimeContentInvalidBase64String   PermanentError     mime_invalid
    4xx       ErrorMessageSizeExceeded              PermanentError     message_too_large
    4xx       ErrorAccessDenied                     PermanentError     scope_missing
    4xx       ErrorSendAsDenied                     PermanentError     send_as_denied
    4xx       MailboxNotEnabledForRESTAPI           PermanentError     mailbox_not_enabled
    401       (other)                               AccessTokenRejected  access_token_rejected
    413       (other)                               PermanentError     message_too_large
    4xx       (other)                               PermanentError     provider_rejected
    5xx, 3xx  (any)                                 OutcomeUnknown     provider_error_ambiguous

The documented codes decide for any 4xx because Graph's status for some of them varies
(MailboxNotEnabledForRESTAPI is reported as 404, 403 and 401). A 5xx other than 503 may come after
Exchange accepted the message, so it is never retried blindly. Network failures are classified by
``mailbox_worker.providers.transport.transport_error``.

Each request carries a fresh ``client-request-id``; log records name it and Graph's ``request-id``,
never the token, the message content or an address.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
import re
import ssl
import uuid
from collections.abc import Mapping
from typing import Any, Final

import aiohttp

from mailbox_worker.errors import (
    AccessTokenRejected,
    DeliveryError,
    OutcomeUnknown,
    PermanentError,
    Throttled,
    TransientError,
)
from mailbox_worker.providers.base import DeliveryMode, DeliveryReceipt, OutgoingMessage
from mailbox_worker.providers.transport import (
    TRANSPORT_ERRORS,
    RequestProgress,
    create_session,
    header,
    parse_retry_after,
    transport_error,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://graph.microsoft.com/v1.0"
DEFAULT_TIMEOUT: Final = aiohttp.ClientTimeout(total=120, connect=15)
REQUEST_BODY_LIMIT: Final = 4 * 1024 * 1024
"""Graph refuses request bodies above 4 MB (docs/providers.md B3)."""

PERMANENT_ERROR_CODES: Final[Mapping[str, str]] = {
    "ErrorInvalidRecipients": "invalid_recipients",
    "ErrorMimeContentInvalidBase64String": "mime_invalid",
    "ErrorMessageSizeExceeded": "message_too_large",
    "ErrorAccessDenied": "scope_missing",
    "ErrorSendAsDenied": "send_as_denied",
    "MailboxNotEnabledForRESTAPI": "mailbox_not_enabled",
}
"""Graph ``error.code`` → our ``PermanentError`` code, for any 4xx answer but 429."""

_PRINTABLE_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,80}")


def largest_mime_for_base64(limit: int) -> int:
    """The largest byte count whose base64 encoding (4 characters per 3 bytes, padded) fits
    in ``limit`` bytes: ``4 * ceil(n / 3) <= limit`` ⇔ ``n <= 3 * (limit // 4)``."""
    return 3 * (limit // 4)


def graph_error(
    status: int, headers: Mapping[str, str], body: bytes, *, now: dt.datetime | None = None
) -> DeliveryError:
    """The error for a non-2xx Graph answer (see the module's table); never raises.

    The message names the status, Graph's error code and ``request-id`` — not Graph's message
    text. ``now`` anchors an HTTP-date ``Retry-After`` (tests pass it).
    """
    graph_code = _graph_error_code(body)
    context = f"HTTP {status} {graph_code or '(no error code)'}, request-id {_request_id(headers)}"
    if status in (429, 503):
        retry_after = parse_retry_after(header(headers, "Retry-After"), now)
        if status == 429:
            return Throttled(
                f"Graph throttled the request: {context}",
                provider_status=status,
                retry_after=retry_after,
            )
        return TransientError(
            f"Graph is unavailable, nothing was processed: {context}",
            code="service_unavailable",
            provider_status=status,
            retry_after=retry_after,
        )
    if 400 <= status < 500:
        permanent = PERMANENT_ERROR_CODES.get(graph_code or "")
        if permanent is not None:
            return PermanentError(
                f"Graph refused: {context}", code=permanent, provider_status=status
            )
        if status == 401:
            return AccessTokenRejected(
                f"Graph rejected the access token: {context}", provider_status=status
            )
        code = "message_too_large" if status == 413 else "provider_rejected"
        return PermanentError(f"Graph refused: {context}", code=code, provider_status=status)
    return OutcomeUnknown(
        f"Graph answered with an error that may follow acceptance: {context}",
        code="provider_error_ambiguous",
        provider_status=status,
    )


def _graph_error_code(body: bytes) -> str | None:
    """``error.code`` of a Graph error body, if it has one that is safe to repeat."""
    error = _json_object(body).get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and _PRINTABLE_CODE.fullmatch(code) else None


def _request_id(headers: Mapping[str, str]) -> str:
    value = header(headers, "request-id") or ""
    return value if _PRINTABLE_CODE.fullmatch(value) else "-"


class GraphProvider:
    """``MailProvider`` for Microsoft 365 mailboxes through Microsoft Graph v1.0 (``/me``).

    Without ``session`` the provider opens its own (bounded connections, request-progress
    tracing) on first use, inside the running loop, and ``close()`` closes it; a given session
    is used as is and left open. ``ssl_context`` and ``timeout`` apply to every request
    (default: the system trust store; 120 s in total, 15 s to connect).
    """

    name = "microsoft"

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        fallback = session.timeout if session is not None else DEFAULT_TIMEOUT
        self._timeout = timeout if timeout is not None else fallback
        self._session = session
        self._owns_session = session is None

    def max_message_bytes(self, mode: DeliveryMode) -> int:
        """Largest MIME message whose base64 form fits Graph's 4 MB request limit (both modes)."""
        return largest_mime_for_base64(REQUEST_BODY_LIMIT)

    async def send(self, access_token: str, message: OutgoingMessage) -> DeliveryReceipt:
        """Send ``message`` with ``sendMail``. Graph returns no id for a sent message."""
        await self._post("sendMail", "/me/sendMail", access_token, message, body_required=False)
        return DeliveryReceipt(state="sent")

    async def create_draft(self, access_token: str, message: OutgoingMessage) -> DeliveryReceipt:
        """Store ``message`` in the mailbox's Drafts folder; the receipt carries the draft id.

        A success answer without a usable ``id`` raises ``OutcomeUnknown``: the draft may exist.
        """
        status, body = await self._post(
            "createDraft", "/me/messages", access_token, message, body_required=True
        )
        draft = _json_object(body)
        draft_id, web_link = draft.get("id"), draft.get("webLink")
        if not isinstance(draft_id, str) or not draft_id:
            raise OutcomeUnknown(
                "Graph accepted the draft but returned no id",
                code="provider_error_ambiguous",
                provider_status=status,
            )
        return DeliveryReceipt(
            state="drafted",
            provider_message_id=draft_id,
            web_link=web_link if isinstance(web_link, str) else None,
        )

    async def close(self) -> None:
        """Close the session if this provider opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(
        self,
        operation: str,
        path: str,
        access_token: str,
        message: OutgoingMessage,
        *,
        body_required: bool,
    ) -> tuple[int, bytes]:
        """POST the base64 MIME of ``message``; the status and body of a 2xx answer.

        Once a status line has arrived, a body that breaks off only matters when it is a
        success body we need (the draft's id): then the outcome is unknown.
        """
        body = base64.b64encode(message.mime)
        if len(body) > REQUEST_BODY_LIMIT:
            raise PermanentError(
                f"the message is {len(message.mime)} bytes; its base64 form exceeds Graph's "
                f"{REQUEST_BODY_LIMIT}-byte request limit",
                code="message_too_large",
            )
        session = self._open_session()
        client_request_id = str(uuid.uuid4())
        headers = {
            "Authorization": f"Bearer {access_token}",
            "Content-Type": "text/plain",
            "client-request-id": client_request_id,
            "return-client-request-id": "true",
        }
        progress = RequestProgress.for_session(session)
        try:
            async with session.post(
                self._base_url + path,
                data=io.BytesIO(body),  # aiohttp warns about large raw-bytes bodies
                headers=headers,
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
                operation, message.job_id, client_request_id, failure.code,
            )  # fmt: skip
            raise failure from error
        request_id = _request_id(response.headers)
        if 200 <= response.status < 300:
            log.info(
                "graph %s job=%s HTTP %s request-id=%s client-request-id=%s",
                operation, message.job_id, response.status, request_id, client_request_id,
            )  # fmt: skip
            return response.status, answer
        failure = graph_error(response.status, response.headers, answer)
        log.warning(
            "graph %s job=%s HTTP %s %s request-id=%s client-request-id=%s",
            operation, message.job_id, response.status, failure.code, request_id,
            client_request_id,
        )  # fmt: skip
        raise failure

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = create_session(self._timeout)
        return self._session


async def _read_answer(response: aiohttp.ClientResponse, body_required: bool) -> bytes:
    """The answer's body, or ``b""`` when it breaks off and is not a success body we need."""
    try:
        return await response.read()
    except TRANSPORT_ERRORS:
        if body_required and 200 <= response.status < 300:
            raise
        return b""


def _json_object(body: bytes) -> dict[str, Any]:
    """``body`` as a JSON object; ``{}`` for anything else (not JSON, not UTF-8, too deep)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return document if isinstance(document, dict) else {}
