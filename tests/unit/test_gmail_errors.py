"""Gmail error answers → typed errors, on the bodies of docs/providers.md D4."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from mailbox_worker.errors import (
    AccessTokenRejected,
    OutcomeUnknown,
    PermanentError,
    Throttled,
)
from mailbox_worker.providers.gmail_errors import gmail_error

NOW = dt.datetime(2024, 11, 12, 11, 0, 0, tzinfo=dt.UTC)


def body(code: int, message: str, reason: str, status: str | None, **extra: str) -> bytes:
    error: dict[str, Any] = {
        "code": code,
        "message": message,
        "errors": [{"message": message, "domain": "global", "reason": reason, **extra}],
    }
    if status is not None:
        error["status"] = status
    return json.dumps({"error": error}).encode()


INSUFFICIENT = json.dumps(
    {
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
).encode()


def test_insufficient_permissions_is_a_missing_scope() -> None:
    error = gmail_error(403, {}, INSUFFICIENT, now=NOW)
    assert isinstance(error, PermanentError)
    assert (error.code, error.provider_status) == ("scope_missing", 403)


def test_invalid_credentials_asks_for_a_refresh() -> None:
    answer = body(
        401,
        "Request had invalid authentication credentials.",
        "authError",
        "UNAUTHENTICATED",
        location="Authorization",
        locationType="header",
    )
    error = gmail_error(401, {}, answer, now=NOW)
    assert isinstance(error, AccessTokenRejected)
    assert error.code == "access_token_rejected"


def test_the_mail_sending_limit_defers_until_the_window_reopens() -> None:
    text = "User-rate limit exceeded.  Retry after 2024-11-12T11:16:42.247Z (Mail sending)"
    answer = body(429, text, "rateLimitExceeded", "RESOURCE_EXHAUSTED")
    error = gmail_error(429, {}, answer, now=NOW)
    assert isinstance(error, Throttled)
    assert error.code == "sending_limit"
    assert error.retry_after == pytest.approx(16 * 60 + 42.247)
    assert "2024" not in error.message  # the text is read, not repeated


@pytest.mark.parametrize("status", [403, 429])
@pytest.mark.parametrize("reason", ["userRateLimitExceeded", "rateLimitExceeded"])
def test_rate_limits_honour_the_retry_after_time(status: int, reason: str) -> None:
    text = "User-rate limit exceeded.  Retry after 2024-11-12T11:02:00.000Z"
    error = gmail_error(status, {}, body(status, text, reason, None), now=NOW)
    assert isinstance(error, Throttled)
    assert (error.code, error.retry_after) == ("throttled", 120.0)


def test_a_quota_message_without_a_time_falls_back_to_the_header_then_the_backoff() -> None:
    text = (
        "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per user' "
        "of service 'gmail.googleapis.com'"
    )
    answer = body(429, text, "userRateLimitExceeded", "RESOURCE_EXHAUSTED")
    with_header = gmail_error(429, {"Retry-After": "30"}, answer, now=NOW)
    assert isinstance(with_header, Throttled) and with_header.retry_after == 30.0
    without = gmail_error(429, {}, answer, now=NOW)
    assert isinstance(without, Throttled) and without.retry_after is None


def test_a_time_already_past_means_now() -> None:
    text = "User-rate limit exceeded.  Retry after 2024-11-12T10:00:00.000Z (Mail sending)"
    error = gmail_error(429, {}, body(429, text, "rateLimitExceeded", None), now=NOW)
    assert isinstance(error, Throttled) and error.retry_after == 0.0


def test_the_projects_daily_limit_is_throttling_not_failure() -> None:
    answer = body(403, "Daily Limit Exceeded", "dailyLimitExceeded", None)
    error = gmail_error(403, {}, answer, now=NOW)
    assert isinstance(error, Throttled) and error.code == "project_quota"


@pytest.mark.parametrize(
    ("status", "message", "reason", "code"),
    [
        (400, "Recipient address required", "invalidArgument", "invalid_recipients"),
        (400, "Invalid To header", "invalidArgument", "invalid_recipients"),
        (
            400,
            "'raw' RFC822 payload message string or uploading message via /upload/* URL required",
            "badRequest",
            "mime_invalid",
        ),
        (403, "Delegation denied for someone@example.com", "forbidden", "send_as_denied"),
        (413, "Media larger than: 36700160", "uploadTooLarge", "message_too_large"),
        (404, "Requested entity was not found.", "notFound", "provider_rejected"),
    ],
)
def test_refusals_are_permanent(status: int, message: str, reason: str, code: str) -> None:
    error = gmail_error(status, {}, body(status, message, reason, "INVALID_ARGUMENT"), now=NOW)
    assert isinstance(error, PermanentError)
    assert error.code == code
    assert "example.com" not in error.message


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_server_error_after_sending_is_an_unknown_outcome(status: int) -> None:
    answer = body(status, "Backend Error", "backendError", None)
    error = gmail_error(status, {"Retry-After": "5"}, answer, now=NOW)
    assert isinstance(error, OutcomeUnknown)
    assert error.code == "provider_error_ambiguous"


def test_a_body_that_is_not_json_is_classified_by_status() -> None:
    assert isinstance(gmail_error(502, {}, b"<html>bad gateway</html>", now=NOW), OutcomeUnknown)
    assert gmail_error(400, {}, b"", now=NOW).code == "mime_invalid"
