"""The MIME builder as it was before it was made cheap (``mailbox_worker/jobs/mime.py`` at
``de46379``), kept only as the reference the new builder is proved equivalent to
(``test_mime_equivalence.py``) and measured against (``bench/mime_build.py``)."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from collections.abc import Mapping, Sequence
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from mailbox_worker.policy.domains import ascii_domain

SMTP_POLICY = policy.SMTP.clone(max_line_length=998)


def decode_attachment(content_base64: str) -> bytes:
    """Strict base64 decoding; raises ``ValueError`` on anything that is not base64."""
    return base64.b64decode(content_base64, validate=True)


def build_message(
    payload: Mapping[str, Any],
    *,
    message_id: str,
    sender: str,
    date: dt.datetime | None = None,
) -> bytes:
    """The RFC 5322 bytes of ``payload``, sent from ``sender`` with ``message_id``.

    ``payload["from"]`` may carry a display name; its address is the mailbox's own
    (the intake checks that). Raises ``ValueError`` on undecodable attachments.
    """
    message = EmailMessage(policy=SMTP_POLICY)
    sender_name = (payload.get("from") or {}).get("name") or ""
    message["From"] = _address({"address": sender, "name": sender_name})
    message["To"] = [_address(item) for item in payload["to"]]
    for field, header in (("cc", "Cc"), ("bcc", "Bcc"), ("reply_to", "Reply-To")):
        if payload.get(field):
            message[header] = [_address(item) for item in payload[field]]
    message["Subject"] = payload["subject"]
    message["Date"] = format_datetime(date or dt.datetime.now(dt.UTC))
    message["Message-ID"] = message_id
    _set_body(message, payload.get("text"), payload.get("html"))
    for attachment in payload.get("attachments") or ():
        maintype, _, subtype = attachment["content_type"].partition("/")
        message.add_attachment(
            decode_attachment(attachment["content_base64"]),
            maintype=maintype,
            subtype=subtype,
            filename=attachment["filename"],
        )
    for part in message.walk():
        if part.is_multipart():
            # Our own boundary, so that the generator does not search the whole message for
            # one that its text does not contain (about 0.8 ms per 100 KB PDF): "=_" cannot
            # occur in base64 or quoted-printable, and 128 random bits not in plain text.
            part.set_boundary(f"=_{secrets.token_hex(16)}")
    return message.as_bytes(policy=SMTP_POLICY)


def _set_body(message: EmailMessage, text: str | None, html: str | None) -> None:
    if text is not None:
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
    elif html is not None:
        message.set_content(html, subtype="html")
    else:
        raise ValueError("a message needs a text or an HTML body")


def _address(item: Mapping[str, Any]) -> Address:
    local, _, domain = str(item["address"]).rpartition("@")
    return Address(display_name=item.get("name") or "", username=local, domain=ascii_domain(domain))


def recipients(payload: Mapping[str, Any]) -> Sequence[str]:
    """Every envelope recipient (To, Cc, Bcc) of a payload."""
    return [item["address"] for field in ("to", "cc", "bcc") for item in payload.get(field) or ()]


def message_size_bound(
    payload: Mapping[str, Any], *, message_id: str, sender: str, decoded_sizes: Sequence[int]
) -> int:
    """At least the length of ``build_message(payload, …)``, and at most
    ``BOUND_SLACK_PER_PART`` bytes per MIME part more, without encoding the attachments.

    ``decoded_sizes`` are the byte counts of ``payload``'s attachments, in order (the
    intake decodes them once, to check them). The message is built with empty attachments
    (headers, bodies and part structure exactly as sent; its cost does not grow with the
    attachments), and each attachment's base64 body is added by arithmetic: the standard
    library writes base64 in lines of ``max_line_length // 4 * 3`` bytes (4 characters for
    3 bytes, padded) each ending in CRLF. The slack covers what may differ from one build to
    the next: a part boundary that met its text and was lengthened (``.0``, ``.1``…).
    Raises ``ValueError`` when the message cannot be built (as ``build_message``).
    """
    attachments = payload.get("attachments") or ()
    if len(decoded_sizes) != len(attachments):
        raise ValueError("one decoded size per attachment is needed")
    skeleton = dict(payload)
    skeleton["attachments"] = [dict(item, content_base64="") for item in attachments]
    size = len(build_message(skeleton, message_id=message_id, sender=sender))
    per_line = (SMTP_POLICY.max_line_length or 76) // 4 * 3
    for count in decoded_sizes:
        size += 4 * -(-count // 3) + 2 * -(-count // per_line)
    parts = 1 + len(attachments) + (2 if payload.get("html") is not None else 0)
    return size + BOUND_SLACK_PER_PART * parts


BOUND_SLACK_PER_PART = 16
"""Bytes ``message_size_bound`` may exceed the built message by, per part boundary line."""
