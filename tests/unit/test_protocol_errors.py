"""What the server answers below the application: stable codes, nothing of the request."""

from __future__ import annotations

import json

import pytest
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, InvalidHeader, LineTooLong

from mailbox_worker.api.protocol_errors import (
    classify,
    head_timeout_answer,
    too_many_connections_answer,
)
from mailbox_worker.api.server import ConnectionCount

SECRET = "code=SECRETCODE"


@pytest.mark.parametrize(
    ("error", "request_line_length", "status", "code"),
    [
        (LineTooLong(SECRET, 8190), 9000, 414, "request_line_too_long"),
        (LineTooLong(SECRET, 8190), 40, 431, "request_header_too_large"),
        (BadHttpMessage("Too many headers received"), 40, 431, "request_header_too_large"),
        (InvalidHeader(SECRET), 40, 400, "malformed_request"),
        (BadHttpMethod(SECRET), 40, 400, "malformed_request"),
        (RuntimeError(SECRET), 40, 500, "internal_error"),
    ],
)
def test_a_parser_error_has_a_stable_code_and_a_message_quoting_nothing(
    error: BaseException, request_line_length: int, status: int, code: str
) -> None:
    failure = classify(error, request_line_length=request_line_length, max_line_size=8190)
    assert (failure.status, failure.code) == (status, code)
    assert "SECRET" not in failure.message


@pytest.mark.parametrize(
    ("answer", "status", "code"),
    [
        (head_timeout_answer(), 408, "request_timeout"),
        (too_many_connections_answer(), 503, "too_many_connections"),
    ],
)
def test_the_raw_answers_are_complete_closing_json_answers(
    answer: bytes, status: int, code: str
) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {status} ")
    assert "Connection: close" in lines
    assert f"Content-Length: {len(body)}" in lines
    error = json.loads(body)["error"]
    assert error["code"] == code
    assert f"X-Request-Id: {error['request_id']}" in lines  # the same id, header and body


def test_each_raw_answer_names_a_request_id_of_its_own() -> None:
    first, second = head_timeout_answer(), head_timeout_answer()
    ids = {
        json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["request_id"]
        for answer in (first, second)
    }
    assert len(ids) == 2


def test_the_connection_count_refuses_at_its_limit_and_admits_again_below(
    caplog: pytest.LogCaptureFixture,
) -> None:
    count = ConnectionCount(2)
    assert [count.admit(), count.admit(), count.admit(), count.admit()] == [
        True,
        True,
        False,
        False,
    ]
    assert caplog.text.count("refusing new ones") == 1  # one warning per flood
    count.release()
    assert count.admit()
    assert count.open == 2
