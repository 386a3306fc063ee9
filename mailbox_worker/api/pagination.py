"""Reading a list's query: ``limit``, the opaque ``cursor`` and the filters it is given.

Every list pages by keyset (docs/api.md#pagination): a page ends with ``next_cursor``, which
names the ``(created_at, id)`` of its last item and the list it belongs to; the next page
starts strictly after it, so rows created meanwhile shift no page. The cursor is URL-safe
base64 of JSON; a cursor that does not decode, names another list or is tampered with is
``400 invalid_cursor``. Any other parameter at fault, or one the list does not know, is
``400 invalid_parameter``: a misspelt filter must not silently widen the answer.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Collection
from typing import Any

from aiohttp import web

from mailbox_worker.api.document import is_date_time
from mailbox_worker.errors import InvalidRequest
from mailbox_worker.jobs.store import Position

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_CURSOR_LENGTH = 300
_ID = re.compile(r"[A-Za-z0-9_-]{1,100}", re.ASCII)


def invalid_parameter(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_parameter")


def check_parameters(
    request: web.Request, known: Collection[str], repeatable: Collection[str]
) -> None:
    """Refuse a parameter the list does not know, or a single-valued one sent twice."""
    for name in request.query:
        if name not in known:
            raise invalid_parameter(
                f"unknown query parameter {name[:40]!r}; known: {', '.join(sorted(known))}"
            )
        if name not in repeatable and len(request.query.getall(name)) > 1:
            raise invalid_parameter(f"{name} must be given at most once")


def page_limit(request: web.Request) -> int:
    """``limit``: 1 to ``MAX_LIMIT``, ``DEFAULT_LIMIT`` when absent."""
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise invalid_parameter(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def flag(request: web.Request, name: str) -> bool:
    """A boolean parameter: ``true`` or ``false``, false when absent."""
    raw = request.query.get(name, "false")
    if raw not in ("true", "false"):
        raise invalid_parameter(f"{name} must be true or false")
    return raw == "true"


def timestamp(request: web.Request, name: str) -> dt.datetime | None:
    """An RFC 3339 date-time with an offset, or None when absent."""
    raw = request.query.get(name)
    if raw is None:
        return None
    if not is_date_time(raw):
        raise invalid_parameter(
            f"{name} must be an RFC 3339 date-time with an offset, e.g. 2026-01-31T00:00:00Z"
        )
    moment = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:  # within a day of year 1 or 9999: before, or after, every row
        earliest = moment.utcoffset() is not None and moment.year == dt.MINYEAR
        return (dt.datetime.min if earliest else dt.datetime.max).replace(tzinfo=dt.UTC)


def identifier(request: web.Request, name: str) -> str | None:
    """An identifier (the document's ``Id``), or None when absent."""
    raw = request.query.get(name)
    if raw is not None and not _ID.fullmatch(raw):
        raise invalid_parameter(f"{name} must be an identifier (letters, digits, _ and -)")
    return raw


def encode_cursor(kind: str, position: Position) -> str:
    """The opaque cursor of the page after ``position`` in the list named ``kind``."""
    created_at, row_id = position
    text = json.dumps([kind, created_at.astimezone(dt.UTC).isoformat(), row_id])
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def page_after(request: web.Request, kind: str) -> Position | None:
    """The position the ``cursor`` parameter names in the list ``kind``; None when absent."""
    raw = request.query.get("cursor")
    if raw is None:
        return None
    position = _decode(raw, kind)
    if position is None:
        raise InvalidRequest(
            "cursor is not one this list gave: pass next_cursor from the previous page as is",
            code="invalid_cursor",
        )
    return position


def _decode(raw: str, kind: str) -> Position | None:
    if not raw or len(raw) > MAX_CURSOR_LENGTH:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        value: Any = json.loads(text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(value, list) or len(value) != 3 or value[0] != kind:
        return None
    _, created_at, row_id = value
    if not isinstance(created_at, str) or not isinstance(row_id, str):
        return None
    if not _ID.fullmatch(row_id):
        return None
    try:
        moment = dt.datetime.fromisoformat(created_at)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    try:
        return moment.astimezone(dt.UTC), row_id
    except OverflowError:
        return None


def next_cursor(kind: str, positions: list[Position], limit: int) -> str | None:
    """The cursor after the last of ``positions`` (one more than ``limit`` were asked for,
    to learn whether another page exists); None on the last page."""
    if len(positions) <= limit:
        return None
    return encode_cursor(kind, positions[limit - 1])
