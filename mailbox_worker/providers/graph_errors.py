"""How a Graph answer that is not a success becomes one of our typed errors.

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
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any, Final

from mailbox_worker.errors import (
    AccessTokenRejected,
    DeliveryError,
    OutcomeUnknown,
    PermanentError,
    Throttled,
    TransientError,
)
from mailbox_worker.providers.transport import header, parse_retry_after

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


def graph_error(
    status: int, headers: Mapping[str, str], body: bytes, *, now: dt.datetime | None = None
) -> DeliveryError:
    """The error for a non-2xx Graph answer (see the module's table); never raises.

    The message names the status, Graph's error code and ``request-id`` — not Graph's message
    text. ``now`` anchors an HTTP-date ``Retry-After`` (tests pass it).
    """
    graph_code = _graph_error_code(body)
    context = f"HTTP {status} {graph_code or '(no error code)'}, request-id {request_id(headers)}"
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
    error = json_object(body).get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and _PRINTABLE_CODE.fullmatch(code) else None


def request_id(headers: Mapping[str, str]) -> str:
    value = header(headers, "request-id") or ""
    return value if _PRINTABLE_CODE.fullmatch(value) else "-"


def json_object(body: bytes) -> dict[str, Any]:
    """``body`` as a JSON object; ``{}`` for anything else (not JSON, not UTF-8, too deep)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return document if isinstance(document, dict) else {}


__all__ = ["PERMANENT_ERROR_CODES", "graph_error", "json_object", "request_id"]
