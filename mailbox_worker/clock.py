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
from collections.abc import Callable

Clock = Callable[[], dt.datetime]
"""Answers "now", timezone-aware, in UTC."""


def utcnow() -> dt.datetime:
    """The system clock: the current time, in UTC."""
    return dt.datetime.now(dt.UTC)


def new_id(prefix: str) -> str:
    """A random, URL-safe identifier such as ``job_3f9c...``: 128 random bits in hex (the
    shape of ``uuid.uuid4().hex``, for about a quarter of its CPU; a job makes several)."""
    return f"{prefix}_{secrets.token_hex(16)}"
