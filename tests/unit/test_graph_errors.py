"""Graph answers and network failures → the DeliveryError the queue acts on (no I/O)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl

import aiohttp
import pytest

from mailbox_worker.errors import (
    AccessTokenRejected,
    DeliveryError,
    OutcomeUnknown,
    PermanentError,
    Throttled,
    TransientError,
)
from mailbox_worker.providers.graph import REQUEST_BODY_LIMIT, GraphProvider
from mailbox_worker.providers.graph_errors import graph_error
from mailbox_worker.providers.graph_mime import largest_mime_for_base64
from mailbox_worker.providers.transport import RequestProgress, parse_retry_after, transport_error

NOW = dt.datetime(2025, 3, 4, 10, 0, 0, tzinfo=dt.UTC)
LEAKY_TEXT = 'Recipient "alice@example.com" isn\'t resolved.'


def graph_body(code: str, message: str = LEAKY_TEXT) -> bytes:
    inner = {"request-id": "0a4d510f", "date": "2025-03-04T10:00:00"}
    return json.dumps({"error": {"code": code, "message": message, "innerError": inner}}).encode()


@pytest.mark.parametrize(
    ("status", "graph_code", "expected_type", "expected_code"),
    [
        (401, "InvalidAuthenticationToken", AccessTokenRejected, "access_token_rejected"),
        (400, "ErrorInvalidRecipients", PermanentError, "invalid_recipients"),
        (400, "ErrorMimeContentInvalidBase64String", PermanentError, "mime_invalid"),
        (400, "ErrorMessageSizeExceeded", PermanentError, "message_too_large"),
        (413, "RequestEntityTooLarge", PermanentError, "message_too_large"),
        (403, "ErrorAccessDenied", PermanentError, "scope_missing"),
        (403, "ErrorSendAsDenied", PermanentError, "send_as_denied"),
        (404, "MailboxNotEnabledForRESTAPI", PermanentError, "mailbox_not_enabled"),
        # Graph's status for this code varies (docs/providers.md B4): the code decides.
        (401, "MailboxNotEnabledForRESTAPI", PermanentError, "mailbox_not_enabled"),
        (400, "BadRequest", PermanentError, "provider_rejected"),
        (404, "ErrorItemNotFound", PermanentError, "provider_rejected"),
        (409, "ErrorIrresolvableConflict", PermanentError, "provider_rejected"),
        (429, "ApplicationThrottled", Throttled, "throttled"),
        (503, "ServiceNotAvailable", TransientError, "service_unavailable"),
        (500, "ErrorInternalServerError", OutcomeUnknown, "provider_error_ambiguous"),
        (502, "BadGateway", OutcomeUnknown, "provider_error_ambiguous"),
        (504, "GatewayTimeout", OutcomeUnknown, "provider_error_ambiguous"),
        (507, "ErrorQuotaExceeded", OutcomeUnknown, "provider_error_ambiguous"),
        # A 5xx code that happens to be in the table stays ambiguous: status decides first.
        (500, "ErrorInvalidRecipients", OutcomeUnknown, "provider_error_ambiguous"),
        (302, "Redirect", OutcomeUnknown, "provider_error_ambiguous"),
    ],
)
def test_every_row_of_the_table(
    status: int, graph_code: str, expected_type: type[DeliveryError], expected_code: str
) -> None:
    error = graph_error(status, {"request-id": "rid-1"}, graph_body(graph_code), now=NOW)

    assert type(error) is expected_type
    assert error.code == expected_code
    assert error.provider_status == status
    assert graph_code in error.message
    assert "rid-1" in error.message
    assert "alice@example.com" not in str(error)


def test_throttled_and_unavailable_carry_retry_after() -> None:
    throttled = graph_error(429, {"Retry-After": "17"}, graph_body("ApplicationThrottled"))
    unavailable = graph_error(503, {"retry-after": "3"}, b"Service Unavailable")

    assert isinstance(throttled, Throttled)
    assert throttled.retry_after == 17.0
    assert isinstance(unavailable, TransientError)
    assert not isinstance(unavailable, Throttled)
    assert unavailable.retry_after == 3.0


def test_throttled_without_retry_after_leaves_the_delay_to_the_caller() -> None:
    error = graph_error(429, {}, b"")

    assert isinstance(error, Throttled)
    assert error.retry_after is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html><body>Bad Gateway</body></html>",
        b"\xff\xfe not utf-8",
        b"[1, 2, 3]",
        b'{"error": "invalid_request"}',
        b'{"error": {"code": 42}}',
        b'{"error": {"code": "two words <script>"}}',
        b'{"error": {"message": "no code"}}',
        b"null",
        b"[" * 100_000,  # deep enough to exhaust the JSON decoder's recursion
    ],
)
@pytest.mark.parametrize(
    ("status", "expected_code"),
    [(400, "provider_rejected"), (401, "access_token_rejected"), (500, "provider_error_ambiguous")],
)
def test_bodies_without_a_usable_error_code_do_not_crash(
    body: bytes, status: int, expected_code: str
) -> None:
    error = graph_error(status, {}, body)

    assert error.code == expected_code
    assert "(no error code)" in error.message
    assert "<script>" not in error.message


def test_unprintable_request_id_is_not_repeated() -> None:
    error = graph_error(400, {"request-id": "a b\r\nInjected: yes"}, graph_body("BadRequest"))

    assert "Injected" not in error.message
    assert "request-id -" in error.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Tue, 04 Mar 2025 10:00:30 GMT", 30.0),
        ("Tuesday, 04-Mar-25 10:01:00 GMT", 60.0),  # RFC 850, obsolete but allowed
        ("Tue Mar  4 10:00:10 2025", 10.0),  # asctime, obsolete but allowed
        ("Tue, 04 Mar 2025 09:00:00 GMT", 0.0),  # in the past: retry now
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1e9", None),
        ("nan", None),
        ("Tue, 99 Foo 2025 10:00:00 GMT", None),
    ],
)
def test_retry_after_parsing(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_retry_after_date_defaults_to_the_current_time() -> None:
    in_a_minute = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
    value = in_a_minute.strftime("%a, %d %b %Y %H:%M:%S GMT")

    parsed = parse_retry_after(value)

    assert parsed is not None
    assert 55 <= parsed <= 60


def test_largest_message_is_the_exact_base64_boundary() -> None:
    largest = largest_mime_for_base64(REQUEST_BODY_LIMIT)

    assert largest == 3 * 1024 * 1024
    assert len(base64.b64encode(bytes(largest))) <= REQUEST_BODY_LIMIT
    assert len(base64.b64encode(bytes(largest + 1))) > REQUEST_BODY_LIMIT


@pytest.mark.parametrize("limit", [0, 3, 4, 5, 7, 8, 1000, 1001, 1002, 1003])
def test_base64_boundary_for_any_limit(limit: int) -> None:
    largest = largest_mime_for_base64(limit)

    assert len(base64.b64encode(bytes(largest))) <= limit
    assert len(base64.b64encode(bytes(largest + 1))) > limit


def test_max_message_bytes_is_the_mailbox_limit_unless_send_only() -> None:
    provider = GraphProvider()

    assert provider.max_message_bytes("send", ["send", "draft"]) == 35 * 1024 * 1024
    assert provider.max_message_bytes("draft", ["draft"]) == 35 * 1024 * 1024
    # Send-only: no Mail.ReadWrite, so no draft to upload to: one sendMail request.
    assert provider.max_message_bytes("send", ["send"]) == 3 * (REQUEST_BODY_LIMIT // 4)


def _connector_error() -> aiohttp.ClientConnectorError:
    key = aiohttp.client_reqrep.ConnectionKey("graph.example", 443, True, True, None, None, None)
    return aiohttp.ClientConnectorError(key, OSError(111, "Connection refused"))


def _certificate_error() -> aiohttp.ClientConnectorCertificateError:
    key = aiohttp.client_reqrep.ConnectionKey("graph.example", 443, True, True, None, None, None)
    return aiohttp.ClientConnectorCertificateError(key, ssl.SSLCertVerificationError("untrusted"))


@pytest.mark.parametrize(
    ("error", "written", "expected_type", "expected_code"),
    [
        # The connection could not be established: nothing was sent, whatever we know.
        (_connector_error(), None, TransientError, "network"),
        (_certificate_error(), None, TransientError, "network"),
        (aiohttp.ConnectionTimeoutError("connect"), None, TransientError, "network"),
        # The trace shows nothing was written (e.g. the total timeout hit while connecting).
        (TimeoutError(), False, TransientError, "network"),
        (aiohttp.ServerDisconnectedError(), False, TransientError, "network"),
        # The request was (or may have been) written: the provider may have processed it.
        (TimeoutError(), True, OutcomeUnknown, "timeout"),
        (TimeoutError(), None, OutcomeUnknown, "timeout"),
        (aiohttp.SocketTimeoutError("read"), True, OutcomeUnknown, "timeout"),
        (aiohttp.ServerDisconnectedError(), True, OutcomeUnknown, "connection_lost"),
        (aiohttp.ServerDisconnectedError(), None, OutcomeUnknown, "connection_lost"),
        (aiohttp.ClientOSError(104, "reset"), True, OutcomeUnknown, "connection_lost"),
        (aiohttp.ClientPayloadError("truncated"), True, OutcomeUnknown, "connection_lost"),
        (ConnectionResetError(104, "reset"), None, OutcomeUnknown, "connection_lost"),
    ],
)
def test_transport_errors(
    error: BaseException,
    written: bool | None,
    expected_type: type[DeliveryError],
    expected_code: str,
) -> None:
    failure = transport_error(error, RequestProgress(written=written))

    assert type(failure) is expected_type
    assert failure.code == expected_code
    assert failure.provider_status is None
