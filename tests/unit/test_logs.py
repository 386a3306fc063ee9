"""Log records never carry a secret or an echo of the request."""

from __future__ import annotations

import logging
import sys

from aiohttp.http_exceptions import LineTooLong

from mailbox_worker.logs import DropRequestEcho, RedactSecrets

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
