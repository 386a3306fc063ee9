"""Log records never carry a secret, an address or an echo of the request; ``logging.json``
gives one JSON object a line."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest
from aiohttp.http_exceptions import LineTooLong

from mailbox_worker.logs import (
    REQUEST_ID,
    AddRequestId,
    DropRequestEcho,
    JsonLines,
    RedactSecrets,
    configure,
)

KEY = "mwk_9116fde02dd64a3d_wFpsh0OJsREB6HqMylryQ6zRtd0tw6-HLccCWPJKOu4"


def record_for(error: Exception, message: str = "Error handling request") -> logging.LogRecord:
    try:
        raise error
    except type(error):
        exc_info = sys.exc_info()
    return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, message, None, exc_info)


def test_a_traceback_quoting_an_api_key_is_redacted() -> None:
    record = record_for(ValueError(f"Got more than 8190 bytes when reading: b'Bearer {KEY} aaa'"))
    assert RedactSecrets().filter(record)
    line = logging.Formatter().format(record)
    assert KEY not in line and "[redacted]" in line


def test_aiohttp_s_echo_of_a_malformed_request_is_dropped() -> None:
    error = LineTooLong(f"Bearer {KEY} to: ap@fabrikam.example", 8190)
    record = record_for(error)
    assert DropRequestEcho().filter(record)
    line = logging.Formatter().format(record)
    assert "LineTooLong" in line
    assert KEY not in line and "fabrikam" not in line


SECRETS = (
    ("Authorization: Bearer %s", "eyJhbGciOiJSUzI1NiJ9.payload.signature"),
    ("refresh_token=%s&scope=Mail.Send", "0.AAAA-refresh-token-value"),
    ('{"access_token": "%s"}', "EwBwA8l6BAAU-access-token"),
    ("api key %s rejected", KEY),
    ("mailbox of %s", "ap@fabrikam.example"),
)
LOGGERS = ("mailbox_worker.jobs.worker", "msal.application", "aiohttp.server", "sqlalchemy")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("json_lines", [False, True], ids=["plain", "json"])
def test_no_secret_or_address_reaches_the_output_of_any_logger(
    json_lines: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("INFO", json_lines=json_lines)
    for name in LOGGERS:
        for template, secret in SECRETS:
            logging.getLogger(name).warning(template, secret)
            try:
                raise RuntimeError(template % secret)
            except RuntimeError:
                logging.getLogger(name).exception("failed")
    output = capsys.readouterr().err
    assert output.count("\n") >= len(LOGGERS) * len(SECRETS) * 2
    for _, secret in SECRETS:
        assert secret not in output
    assert "[redacted]" in output and "[address]" in output


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_are_one_object_a_record_with_its_context(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("INFO", json_lines=True)
    log = logging.getLogger("mailbox_worker.jobs.worker")
    log.warning("job %s: lease lost", "job_1", extra={"job_id": "job_1", "code": "lease_lost"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("unexpected error", extra={"loop": "worker"})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["level"] for line in lines] == ["WARNING", "ERROR"]
    first, second = lines
    assert first["event"] == "job job_1: lease lost"
    assert (first["job_id"], first["code"], first["logger"]) == (
        "job_1",
        "lease_lost",
        "mailbox_worker.jobs.worker",
    )
    assert first["time"].endswith("Z") and "traceback" not in first
    assert second["error"] == "ValueError" and second["loop"] == "worker"
    assert "ValueError: boom" in second["traceback"]


def test_a_record_made_while_a_request_is_handled_names_its_request_id() -> None:
    def line(request_id: str | None) -> dict[str, object]:
        record = logging.LogRecord("mailbox_worker.api", logging.INFO, __file__, 1, "x", None, None)
        token = REQUEST_ID.set(request_id)
        try:
            assert AddRequestId().filter(record)
        finally:
            REQUEST_ID.reset(token)
        parsed: dict[str, object] = json.loads(JsonLines().format(record))
        return parsed

    assert line("req_0123")["request_id"] == "req_0123"
    assert "request_id" not in line(None)  # a record outside any request
