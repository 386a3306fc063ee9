"""The signature of a callback POST, and its check (docs/webhooks.md#signature).

The header is ``X-Mailbox-Worker-Signature: t=<unix seconds>,v1=<hex>``, where ``<hex>`` is
the lowercase hex HMAC-SHA256, under ``callbacks.secret``, of the bytes ``"<t>.<raw body>"``.
Binding the time into the MAC lets a receiver refuse a captured POST replayed later: it
rejects a ``t`` further than ``TOLERANCE`` seconds from its own clock. Several ``v1`` entries
may appear (one a secret, while a secret is being rotated); one matching entry is enough.

Pure functions: no clock is read here, the caller passes ``now``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from enum import StrEnum

SIGNATURE_HEADER = "X-Mailbox-Worker-Signature"
EVENT_ID_HEADER = "X-Mailbox-Worker-Event-Id"
EVENT_TYPE_HEADER = "X-Mailbox-Worker-Event-Type"
TOLERANCE = 300
"""Seconds a receiver accepts between a signature's ``t`` and its own clock, either way."""

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX_MAC = re.compile(r"[0-9a-f]{64}")


class Check(StrEnum):
    """The verdict of ``verify``."""

    VALID = "valid"
    MALFORMED = "malformed"
    """Not ``t=<digits>`` once and ``v1=<64 lowercase hex>`` at least once."""
    OUTSIDE_TOLERANCE = "outside_tolerance"
    """``t`` is more than the tolerance before or after ``now``: a replay, or a wrong clock."""
    MISMATCH = "mismatch"
    """No ``v1`` is the MAC of these bytes at this ``t`` under any of the secrets."""


def mac(secret: str, timestamp: int, body: bytes) -> str:
    """The lowercase hex HMAC-SHA256 under ``secret`` of ``b"<timestamp>." + body``."""
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(body: bytes, timestamp: int, *secrets: str) -> str:
    """The signature header's value for ``body`` sent at ``timestamp`` (unix seconds): one
    ``v1`` entry for each secret, in the order given. At least one secret is required."""
    if not secrets:
        raise ValueError("signing needs at least one secret")
    if timestamp < 0:
        raise ValueError("the timestamp is unix seconds, never negative")
    entries = [f"t={timestamp}"] + [f"v1={mac(secret, timestamp, body)}" for secret in secrets]
    return ",".join(entries)


def parse(header: str) -> tuple[int, list[str]] | None:
    """``(t, [v1, …])`` of a signature header, or None when it is malformed. Entries of other
    schemes (``v2=…``) are ignored, so a later scheme can be sent beside ``v1``."""
    timestamp: int | None = None
    macs: list[str] = []
    for entry in header.split(","):
        name, equals, value = entry.strip().partition("=")
        if not equals:
            return None
        if name == "t":
            if timestamp is not None or not _TIMESTAMP.fullmatch(value):
                return None
            timestamp = int(value)
        elif name == "v1":
            if not _HEX_MAC.fullmatch(value):
                return None
            macs.append(value)
    if timestamp is None or not macs:
        return None
    return timestamp, macs


def verify(
    header: str, body: bytes, *secrets: str, now: float, tolerance: float = TOLERANCE
) -> Check:
    """Check a received POST: ``header`` is the signature header's value, ``body`` the raw
    bytes received (before any parsing), ``now`` the receiver's clock in unix seconds.

    ``VALID`` only when the header is well formed, its ``t`` lies within ``tolerance`` seconds
    of ``now`` (either way) and one of its ``v1`` entries equals the MAC under one of
    ``secrets`` (compared in constant time). The tolerance is checked before any MAC.
    """
    parsed = parse(header)
    if parsed is None:
        return Check.MALFORMED
    timestamp, macs = parsed
    if abs(now - timestamp) > tolerance:
        return Check.OUTSIDE_TOLERANCE
    for secret in secrets:
        expected = mac(secret, timestamp, body)
        if any(hmac.compare_digest(expected, candidate) for candidate in macs):
            return Check.VALID
    return Check.MISMATCH
