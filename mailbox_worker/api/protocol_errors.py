"""Answers for failures below the application: a request aiohttp could not parse, a request
head that arrived too slowly, a connection over the limit.

aiohttp answers an unparsable request itself, in plain text quoting the offending bytes
(``Got more than 8190 bytes when reading: b'/oauth/callback?code=...'``). The answers here
are JSON ``{"error": {"code", "message"}}`` like every other failure of the API
(``mailbox_worker.api.errors``), and contain nothing of the request:

- ``414 request_line_too_long``: the request line exceeds the parser's limit;
- ``431 request_header_too_large``: a header line exceeds it, or there are too many headers;
- ``400 malformed_request``: anything else that is not HTTP/1.1 (bad method, bad header...);
- ``408 request_timeout``: the request head did not arrive in time (written raw: no request);
- ``503 too_many_connections``: the connection limit is reached (written raw: no request).

Each answer carries a fresh ``X-Request-Id``, in its header and its body, like every other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong

from mailbox_worker.api.request_id import HEADER as REQUEST_ID_HEADER
from mailbox_worker.api.request_id import new_id

# aiohttp's parsers (C and Python) raise BadHttpMessage with this text for over max_headers.
_TOO_MANY_HEADERS = "Too many headers"


@dataclass(frozen=True)
class ProtocolFailure:
    status: int
    code: str
    message: str


def classify(
    error: BaseException | None, *, request_line_length: int, max_line_size: int
) -> ProtocolFailure:
    """What to answer for ``error``, raised by aiohttp's parser on a request head.

    ``request_line_length`` is how many bytes of the head's first line had arrived (the
    parsers raise ``LineTooLong`` for the request line and for a header line alike).
    """
    if isinstance(error, LineTooLong):
        if request_line_length > max_line_size:
            return ProtocolFailure(
                414,
                "request_line_too_long",
                f"the request line exceeds {max_line_size} bytes",
            )
        return ProtocolFailure(
            431, "request_header_too_large", "a request header exceeds the size limit"
        )
    if isinstance(error, BadHttpMessage) and error.message.startswith(_TOO_MANY_HEADERS):
        return ProtocolFailure(431, "request_header_too_large", "the request has too many headers")
    if isinstance(error, HttpProcessingError):
        return ProtocolFailure(400, "malformed_request", "the request is not valid HTTP/1.1")
    return ProtocolFailure(500, "internal_error", "internal error; it was logged")


def raw_answer(
    status: int, reason: str, code: str, message: str, headers: Mapping[str, str] | None = None
) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 answer with a JSON error body, as bytes.

    For the two answers written before any request exists (so without aiohttp's response
    machinery, which needs one): ``message`` must be a constant, never request data. Each call
    draws a fresh request id.
    """
    identifier = new_id()
    body = json.dumps(
        {"error": {"code": code, "message": message, "request_id": identifier}}
    ).encode()
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/json; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        f"{REQUEST_ID_HEADER}: {identifier}",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def head_timeout_answer() -> bytes:
    """``408 request_timeout``: the request head did not arrive in time."""
    return raw_answer(
        408,
        "Request Timeout",
        "request_timeout",
        "the request head (request line and headers) did not arrive in time",
    )


def too_many_connections_answer() -> bytes:
    """``503 too_many_connections``, with ``Retry-After``."""
    return raw_answer(
        503,
        "Service Unavailable",
        "too_many_connections",
        "the server has too many open connections; retry later",
        {"Retry-After": "1"},
    )
