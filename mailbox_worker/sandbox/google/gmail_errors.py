"""Gmail API error answers in Google's format (docs/providers.md D4).

Body: ``{"error":{"code":<HTTP status>,"message","errors":[{"message","domain","reason"}],
"status"}}``; the 401 entry also names ``location``/``locationType``. Handlers raise
``GmailFailure``; ``GmailEndpoints`` renders it with ``render``. Texts that docs/providers.md
D2/D4 do not give, or marks unconfirmed, are best guesses kept in this one place.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Mapping

from aiohttp import web

# The reason and canonical status of answers chosen for an injected fault, by HTTP status.
_STATUS_ANSWERS: dict[int, tuple[str, str, str, str]] = {
    # status: (message, domain, reason, canonical status)
    400: ("Bad Request", "global", "badRequest", "INVALID_ARGUMENT"),
    404: ("Requested entity was not found.", "global", "notFound", "NOT_FOUND"),
    409: ("Requested entity already exists", "global", "conflict", "ALREADY_EXISTS"),
    413: ("Request Entity Too Large", "global", "uploadTooLarge", "INVALID_ARGUMENT"),
    500: ("Backend Error", "global", "backendError", "INTERNAL"),
    502: ("Bad Gateway", "global", "backendError", "UNAVAILABLE"),
    503: ("The service is currently unavailable.", "global", "backendError", "UNAVAILABLE"),
    504: ("Deadline exceeded", "global", "backendError", "DEADLINE_EXCEEDED"),
}

# Google's answer to a missing, unknown or expired access token (docs/providers.md D4; the
# top-level message is the one Google APIs give, unconfirmed for Gmail specifically).
_INVALID_CREDENTIALS_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
# Sent with 401 so a client knows to get a new token (the header's wording is unconfirmed).
_WWW_AUTHENTICATE = 'Bearer realm="https://accounts.google.com/", error="invalid_token"'
MISSING_RAW = "'raw' RFC822 payload message string or uploading message via /upload/* URL required"


class GmailFailure(Exception):
    """A Gmail error answer; ``extra`` adds fields to the ``errors[]`` entry."""

    def __init__(
        self,
        status: int,
        message: str,
        reason: str,
        api_status: str | None,
        *,
        domain: str = "global",
        error_message: str | None = None,
        extra: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.message = message
        self.reason = reason
        self.api_status = api_status
        self.domain = domain
        self.error_message = error_message if error_message is not None else message
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})


def render(failure: GmailFailure) -> web.Response:
    """The JSON error response for ``failure``."""
    entry = {"message": failure.error_message, "domain": failure.domain, "reason": failure.reason}
    entry |= failure.extra
    error: dict[str, object] = {
        "code": failure.status,
        "message": failure.message,
        "errors": [entry],
    }
    if failure.api_status is not None:
        error["status"] = failure.api_status
    return web.Response(
        status=failure.status,
        text=json.dumps({"error": error}, indent=2),
        content_type="application/json",
        charset="UTF-8",
        headers=failure.headers,
    )


def retry_time(moment: float) -> str:
    """RFC 3339 with milliseconds, as in "Retry after 2024-11-12T11:16:42.247Z" (D4), rounded
    up to the millisecond: a client that retries at the moment named is not refused (cut
    down, the name could fall up to a millisecond before the window frees)."""
    millis = math.ceil(moment * 1000)
    at = datetime.datetime.fromtimestamp(millis // 1000, datetime.UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}Z"


# -- the answers ---------------------------------------------------------------------------


def invalid_credentials() -> GmailFailure:
    """401 ``authError``: no, an unknown, an expired or a revoked access token (D4)."""
    return GmailFailure(
        401,
        _INVALID_CREDENTIALS_MESSAGE,
        "authError",
        "UNAUTHENTICATED",
        error_message="Invalid Credentials",
        extra={"location": "Authorization", "locationType": "header"},
        headers={"WWW-Authenticate": _WWW_AUTHENTICATE},
    )


def insufficient_permissions() -> GmailFailure:
    """403 ``insufficientPermissions``: none of the method's scopes was granted (D4, verbatim)."""
    return GmailFailure(
        403,
        "Request had insufficient authentication scopes.",
        "insufficientPermissions",
        "PERMISSION_DENIED",
        error_message="Insufficient Permission",
    )


def delegation_denied(user_id: str) -> GmailFailure:
    """403 for a ``userId`` that is neither ``me`` nor the token's own address (unconfirmed)."""
    message = f"Delegation denied for {user_id}"
    return GmailFailure(403, message, "forbidden", "PERMISSION_DENIED")


def invalid_argument(message: str) -> GmailFailure:
    """400 ``invalidArgument`` / ``INVALID_ARGUMENT``: a bad ``raw`` or header (D2)."""
    return GmailFailure(400, message, "invalidArgument", "INVALID_ARGUMENT")


def bad_request(message: str) -> GmailFailure:
    """400 ``badRequest``: a request the API cannot read at all (D4)."""
    return GmailFailure(400, message, "badRequest", "INVALID_ARGUMENT")


def not_found() -> GmailFailure:
    """404 ``notFound``: an unknown draft id or upload session (D4, unconfirmed)."""
    return GmailFailure(404, "Requested entity was not found.", "notFound", "NOT_FOUND")


def too_large(limit: int) -> GmailFailure:
    """413 for a message above the upload's ``maxSize`` (D1; the body is a best guess)."""
    message = f"Media larger than: {limit}"
    return GmailFailure(413, message, "uploadTooLarge", "INVALID_ARGUMENT")


def user_rate_limited(until: float) -> GmailFailure:
    """429 ``userRateLimitExceeded``: the per-user quota units are used up until ``until``."""
    message = f"User-rate limit exceeded.  Retry after {retry_time(until)}"
    return GmailFailure(
        429, message, "userRateLimitExceeded", "RESOURCE_EXHAUSTED", domain="usageLimits"
    )


def sending_limit_exceeded(until: float) -> GmailFailure:
    """429 ``rateLimitExceeded`` "(Mail sending)": the daily sending limit, until ``until`` (D4)."""
    message = f"User-rate limit exceeded.  Retry after {retry_time(until)} (Mail sending)"
    return GmailFailure(
        429, message, "rateLimitExceeded", "RESOURCE_EXHAUSTED", domain="usageLimits"
    )


def for_status(status: int, now: float, retry_after: int) -> GmailFailure:
    """The answer for an injected fault of ``status`` (429: a per-user rate limit lifting
    ``retry_after`` seconds from ``now``)."""
    if status == 401:
        return invalid_credentials()
    if status == 403:
        return insufficient_permissions()
    if status == 429:
        return user_rate_limited(now + retry_after)
    message, domain, reason, api_status = _STATUS_ANSWERS.get(
        status, ("Unknown Error.", "global", "unknown", "UNKNOWN")
    )
    return GmailFailure(status, message, reason, api_status, domain=domain)
