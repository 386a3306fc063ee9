"""A message too large for one Graph request, split: the MIME without its largest attachments,
and those attachments, to be added to the draft one by one (docs/providers.md B2, B3).

Memory matters here: every large job in flight passes through it (docs/performance.md#memory).
Sizes of base64 forms are computed, not encoded; the message is fed to the standard library's
parser in chunks (``parsebytes`` decodes the whole message to a str and wraps it in a
``StringIO``, whose buffer takes 4 bytes a character: about 5 x the message at once).
"""

from __future__ import annotations

import binascii
import contextlib
from dataclasses import dataclass
from email import policy
from email.feedparser import BytesFeedParser
from email.message import EmailMessage

from mailbox_worker.errors import PermanentError


def largest_mime_for_base64(limit: int) -> int:
    """The largest byte count whose base64 encoding (4 characters per 3 bytes, padded) fits
    in ``limit`` bytes: ``4 * ceil(n / 3) <= limit`` ⇔ ``n <= 3 * (limit // 4)``."""
    return 3 * (limit // 4)


def base64_length(size: int) -> int:
    """The length of the base64 encoding of ``size`` bytes (4 characters per 3 bytes,
    padded), without encoding them."""
    return 4 * -(-size // 3)


FEED_CHUNK = 64 * 1024
"""Bytes handed to the parser at a time (it splits them into lines as they come)."""


@dataclass(frozen=True)
class Attachment:
    """A file taken out of a message, to be added to its draft on its own."""

    name: str
    content_type: str
    data: bytes
    inline: bool
    content_id: str | None


def detach_attachments(mime: bytes, limit: int) -> tuple[bytes, list[Attachment]]:
    """``mime`` without the fewest (largest first) attachments that keep its base64 form
    above ``limit`` bytes, and those attachments; ``(mime, [])`` unchanged when it fits.

    Raises ``PermanentError`` (``message_too_large``) when even the message without any
    attachment does not fit: its body alone is too large.
    """
    if base64_length(len(mime)) <= limit:
        return mime, []
    message = _parse(mime)
    # Largest first; each size decoded and dropped, so that at most one attachment of those
    # kept is decoded at a time.
    parts = sorted(message.iter_attachments(), key=lambda part: len(_decoded(part)), reverse=True)
    detached: list[EmailMessage] = []
    remainder = mime
    for part in parts:
        if base64_length(len(remainder)) <= limit:
            break
        detached.append(part)
        kept = [child for child in message.get_payload() if child is not part]
        message.set_payload(kept)
        remainder = message.as_bytes(policy=policy.SMTP)
    if base64_length(len(remainder)) > limit:
        raise PermanentError(
            f"the message is {len(mime)} bytes and, without its attachments, still exceeds "
            f"Graph's {limit}-byte request limit",
            code="message_too_large",
        )
    return remainder, [_attachment(part) for part in detached]


def _parse(mime: bytes) -> EmailMessage:
    """``mime`` parsed as ``BytesParser(policy=policy.SMTP).parsebytes`` would, fed in
    ``FEED_CHUNK`` slices (see the module's docstring)."""
    parser = BytesFeedParser(policy=policy.SMTP)
    view = memoryview(mime)
    for start in range(0, len(view), FEED_CHUNK):
        parser.feed(view[start : start + FEED_CHUNK].tobytes())
    message = parser.close()
    assert isinstance(message, EmailMessage)
    return message


def _decoded(part: EmailMessage) -> bytes:
    """The part's content. Base64 (how ``build_message`` writes every attachment) is decoded
    by ``binascii``, which skips the line breaks itself: ``get_payload(decode=True)`` encodes
    the text, splits it into lines and joins them first (three more copies, measured)."""
    if part.get("Content-Transfer-Encoding", "").strip().lower() == "base64":
        encoded = part.get_payload()
        if isinstance(encoded, str):
            with contextlib.suppress(binascii.Error, ValueError):
                return binascii.a2b_base64(encoded)
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _attachment(part: EmailMessage) -> Attachment:
    content_id = part.get("Content-ID")
    return Attachment(
        name=part.get_filename() or "attachment",
        content_type=part.get_content_type(),
        data=_decoded(part),
        inline=part.get_content_disposition() == "inline",
        content_id=str(content_id).strip("<> ") if content_id else None,
    )


__all__ = ["Attachment", "base64_length", "detach_attachments", "largest_mime_for_base64"]
