"""Logging set-up: one line per record (plain text, or one JSON object with ``logging.json``),
and a last line of defence against leaked secrets and addresses.

Nothing in mailbox-worker logs a token or an e-mail address on purpose; ``RedactSecrets``
masks anything that still looks like a bearer token, an OAuth parameter, one of our API keys
or an e-mail address, whatever logger (ours or a library's) emitted it, in the message and in
any traceback, before either formatter sees the record.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from contextvars import ContextVar

from aiohttp.http_exceptions import HttpProcessingError

SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(
        r"(?i)((?:access_token|refresh_token|id_token|client_secret|code_verifier|code|token)"
        r"[\"']?\s*[=:]\s*[\"']?)[^\s&\"',}]+"
    ),
    re.compile(r"mwk_[A-Za-z0-9]+_[A-Za-z0-9_-]+"),
)
ADDRESS_PATTERN = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
"""An e-mail address (privacy: logs name mailboxes by id, never by address)."""
CONTEXT_FIELDS = ("job_id", "mailbox_id", "account_id", "worker", "loop", "code", "request_id")
"""Attributes a call may pass with ``extra=``; the JSON form writes them as their own keys."""
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The API request being handled (``X-Request-Id``, set by ``api/request_id.py``)."""


def redact(text: str) -> str:
    for pattern in SECRET_PATTERNS:
        text = pattern.sub(
            lambda match: (match.group(1) if match.groups() else "") + "[redacted]", text
        )
    return ADDRESS_PATTERN.sub("[address]", text)


class RedactSecrets(logging.Filter):
    """Secrets out of the message and out of any traceback (an exception's text may quote a
    request header, e.g. aiohttp's "Got more than 8190 bytes when reading: b'Bearer ...'")."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class AddRequestId(logging.Filter):
    """``request_id`` on every record made while an API request is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        identifier = REQUEST_ID.get()
        if identifier is not None and getattr(record, "request_id", None) is None:
            record.request_id = identifier
        return True


class DropRequestEcho(logging.Filter):
    """aiohttp's server logs a malformed request with an exception that quotes the request
    (headers, body: addresses, subjects). Keep only what went wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.msg = "malformed HTTP request refused: %s (status %s)"
            record.args = (type(error).__name__, error.code)
            record.exc_info, record.exc_text = None, None
        return True


class JsonLines(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, RFC 3339), ``level``, ``logger``, ``event``
    (the message), the context fields the call passed (``CONTEXT_FIELDS``) and, for an
    exception, ``error`` (its type) and ``traceback``. Runs after ``RedactSecrets``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = redact(str(value))
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = record.exc_info[0].__name__
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            line["traceback"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_FORMATTER = logging.Formatter()


def configure(level: str, *, json_lines: bool = False) -> None:
    """Send every record to stderr, redacted, as plain text or (``json_lines``) JSON objects."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if json_lines else logging.Formatter(PLAIN))
    handler.addFilter(AddRequestId())
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.server").addFilter(DropRequestEcho())
    for noisy in ("msal", "urllib3", "aiohttp.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
