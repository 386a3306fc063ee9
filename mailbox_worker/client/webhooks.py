"""Checking that a webhook (an event the daemon POSTs to the invoicing app) is genuine.

The daemon signs each delivery with the callbacks secret they share::

    X-Mailbox-Worker-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">

While the secret is being rotated the header carries one ``v1`` per secret; one match is
enough. The timestamp is signed with the body, so a captured delivery cannot be replayed
later than ``tolerance`` seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from mailbox_worker.client.errors import WebhookVerificationError

SIGNATURE_HEADER = "X-Mailbox-Worker-Signature"
DEFAULT_TOLERANCE = 300


def _parse(signature_header: str) -> tuple[int, list[str]]:
    """The timestamp and the ``v1`` signatures; other schemes are skipped, for later ones."""
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in signature_header.split(","):
        name, separator, value = item.strip().partition("=")
        if not separator or not value:
            raise WebhookVerificationError("malformed signature header")
        if name == "t":
            timestamps.append(value)
        elif name == "v1":
            signatures.append(value)
    if len(timestamps) != 1 or not timestamps[0].isascii() or not timestamps[0].isdigit():
        raise WebhookVerificationError("the signature header needs one integer timestamp t=")
    if not signatures:
        raise WebhookVerificationError("the signature header has no v1= signature")
    return int(timestamps[0]), signatures


def verify_webhook(
    secret: str | bytes,
    body: bytes,
    signature_header: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> dict[str, Any]:
    """The event in ``body`` (the raw bytes received, before any JSON parsing), once proven.

    Raises ``WebhookVerificationError`` unless one ``v1`` signature of ``signature_header``
    (the ``X-Mailbox-Worker-Signature`` header) is the HMAC-SHA256 under ``secret`` of
    ``"<t>.<body>"``, and ``t`` is within ``tolerance`` seconds of ``now`` (default: the
    current time) either way, and the body is a JSON object.
    """
    timestamp, signatures = _parse(signature_header)
    key = secret.encode() if isinstance(secret, str) else secret
    expected = hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    # compare_digest on every candidate: how many bytes matched must not show in the timing.
    matched = [hmac.compare_digest(expected.encode(), s.encode()) for s in signatures]
    if not any(matched):
        raise WebhookVerificationError("no signature matches the body under this secret")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError("the signature's timestamp is outside the tolerance")
    try:
        event = json.loads(body)
    except ValueError:
        raise WebhookVerificationError("the body is not JSON") from None
    if not isinstance(event, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    return event
