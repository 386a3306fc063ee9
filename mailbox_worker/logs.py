"""Logging set-up: one line per record, and a last line of defence against leaked secrets.

Nothing in mailbox-worker logs a token on purpose; ``RedactSecrets`` masks anything that
still looks like a bearer token, an OAuth parameter or one of our API keys, whatever logger
(ours or a library's) emitted it.
"""

from __future__ import annotations

import logging
import re

from aiohttp.http_exceptions import HttpProcessingError

SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(
        r"(?i)((?:access_token|refresh_token|id_token|client_secret|code_verifier|code|token)"
        r"[\"']?\s*[=:]\s*[\"']?)[^\s&\"',}]+"
    ),
    re.compile(r"mwk_[A-Za-z0-9]+_[A-Za-z0-9_-]+"),
)


def redact(text: str) -> str:
    for pattern in SECRET_PATTERNS:
        text = pattern.sub(
            lambda match: (match.group(1) if match.groups() else "") + "[redacted]", text
        )
    return text


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


_FORMATTER = logging.Formatter()


def configure(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.server").addFilter(DropRequestEcho())
    for noisy in ("msal", "urllib3", "aiohttp.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
