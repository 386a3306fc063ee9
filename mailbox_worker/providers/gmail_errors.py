"""Gmail API error answers as the typed errors the queue acts on (docs/providers.md D4).

Classified from the status and ``error.errors[0].reason`` — the message text is read only
for the "Retry after <time>" of a throttling answer and the "(Mail sending)" mark of the daily
sending limit, and never repeated (it may quote an address):

    HTTP       reason                                   raised              code
    401        (any)                                    AccessTokenRejected access_token_rejected
    403, 429   rateLimitExceeded, userRateLimitExceeded Throttled           sending_limit (text
                                                                            has "(Mail sending)"),
                                                                            else throttled
    429        (other)                                  Throttled           throttled
    403        dailyLimitExceeded (the project's quota) Throttled           project_quota
    403        insufficientPermissions                  PermanentError      scope_missing
    403        forbidden (userId is not the token's)    PermanentError      send_as_denied
    400        "Recipient address required", "Invalid To header"
                                                        PermanentError      invalid_recipients
    400        (other)                                  PermanentError      mime_invalid
    413        (any)                                    PermanentError      message_too_large
    4xx        (other)                                  PermanentError      provider_rejected
    5xx, 3xx   (any)                                    OutcomeUnknown      provider_error_ambiguous

Throttled answers carry ``retry_after``: seconds until the "Retry after" time of the message
(the sending limit's window reopening, which can be hours away; D4, D5), else the
``Retry-After`` header, else ``None`` (the queue's backoff). A throttled job is deferred, never
failed. A 401 makes the worker refresh the token once and retry (``AccessTokenRejected``, as
for Graph); a grant that is gone then surfaces at that refresh as ``ReauthRequired``. A 5xx may
come after Google accepted the message (D7 warns of duplicates), so it is never retried blindly.
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
)
from mailbox_worker.providers.transport import header, parse_retry_after

RATE_LIMIT_REASONS: Final = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
SENDING_LIMIT_MARK: Final = "(Mail sending)"
_RETRY_AFTER = re.compile(
    r"Retry after (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d))"
)
_RECIPIENT_TEXTS: Final = ("Recipient address required", "Invalid To header")
_PRINTABLE = re.compile(r"[A-Za-z0-9_.\-]{1,80}")


def gmail_error(
    status: int, headers: Mapping[str, str], body: bytes, *, now: dt.datetime
) -> DeliveryError:
    """The error for a non-2xx Gmail answer (see the module's table); never raises.

    ``now`` (aware UTC) anchors the "Retry after" time: the caller passes its clock, so a
    deferral ends exactly when Google said. The message names the status and the reason only.
    """
    error = _error_object(body)
    reason = _first_reason(error)
    text = error.get("message") if isinstance(error.get("message"), str) else ""
    assert isinstance(text, str)
    context = f"HTTP {status} {reason or '(no reason)'}"
    if status == 401:
        return AccessTokenRejected(
            f"Gmail rejected the access token: {context}", provider_status=status
        )
    if status == 429 or (status == 403 and reason in RATE_LIMIT_REASONS):
        sending_limit = SENDING_LIMIT_MARK in text
        retry_after = _retry_after_text(text, now)
        if retry_after is None:
            retry_after = parse_retry_after(header(headers, "Retry-After"), now)
        what = "the mailbox's daily sending limit" if sending_limit else "a rate limit"
        return Throttled(
            f"Gmail refused for {what}: {context}",
            code="sending_limit" if sending_limit else "throttled",
            provider_status=status,
            retry_after=retry_after,
        )
    if status == 403 and reason == "dailyLimitExceeded":
        return Throttled(
            f"our project's Gmail quota is spent: {context}",
            code="project_quota",
            provider_status=status,
            retry_after=parse_retry_after(header(headers, "Retry-After"), now),
        )
    if 400 <= status < 500:
        return PermanentError(
            f"Gmail refused: {context}", code=_permanent_code(status, reason, text),
            provider_status=status,
        )  # fmt: skip
    return OutcomeUnknown(
        f"Gmail answered with an error that may follow acceptance: {context}",
        code="provider_error_ambiguous",
        provider_status=status,
    )


def _permanent_code(status: int, reason: str | None, text: str) -> str:
    if status == 413:
        return "message_too_large"
    if reason == "insufficientPermissions":
        return "scope_missing"
    if status == 403 and reason == "forbidden":
        return "send_as_denied"
    if status == 400:
        if any(known in text for known in _RECIPIENT_TEXTS):
            return "invalid_recipients"
        return "mime_invalid"
    return "provider_rejected"


def _retry_after_text(text: str, now: dt.datetime) -> float | None:
    """Seconds from ``now`` to the message's "Retry after <RFC 3339>", never below 0."""
    found = _RETRY_AFTER.search(text)
    if found is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(found.group(1).replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (moment - now).total_seconds())


def _error_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    error = document.get("error") if isinstance(document, dict) else None
    return error if isinstance(error, dict) else {}


def _first_reason(error: Mapping[str, Any]) -> str | None:
    """``errors[0].reason``, if it is a short identifier (safe to repeat in messages)."""
    errors = error.get("errors")
    first = errors[0] if isinstance(errors, list) and errors else None
    reason = first.get("reason") if isinstance(first, dict) else None
    return reason if isinstance(reason, str) and _PRINTABLE.fullmatch(reason) else None
