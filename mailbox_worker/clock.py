"""The time and the identifiers the daemon makes up: the two seams tests control.

A ``Clock`` is any callable answering the current time as an aware UTC ``datetime``.
Components that read the time (the stores, the worker's scheduling, the vault, the intake)
take one through their constructor, defaulting to ``utcnow`` (the system clock); a test
passes a fixed or advancing clock instead of patching a module. This module imports nothing
of ours.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Callable

Clock = Callable[[], dt.datetime]
"""Answers "now", timezone-aware, in UTC."""


def utcnow() -> dt.datetime:
    """The system clock: the current time, in UTC."""
    return dt.datetime.now(dt.UTC)


def new_id(prefix: str) -> str:
    """A URL-safe identifier such as ``job_0193a5c2e1f04b9d...``: 32 hex digits, the Unix time
    in milliseconds (12 digits) then 80 random bits (20 digits).

    Ordered by creation, as a UUIDv7 is (RFC 9562), so that the rows a table receives together
    are together in its indexes: a job's id leads the keys of ``jobs``, ``job_contents``, its
    events and its outbox rows, and the queue takes and updates jobs about in the order they
    were made. With 128 random bits each new entry went to a random page of those indexes:
    in a queue drain of 10,000 jobs PostgreSQL spent 6-19 % more CPU per job
    (docs/performance.md "Tenth pass"), and the larger the tables, the more pages that
    touches. The time is the system's, not a ``Clock``'s: it orders ids and means nothing
    else; 80 random bits keep ids made in the same millisecond apart. Not a secret: what must
    be unguessable has a token of its own (API keys, OAuth states, request ids).
    """
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"
