"""Build the RFC 5322 message of a job with the standard library's ``email`` package.

The payload is the ``message`` object of the enqueue request (addresses as
``{"address", "name"}``, attachments with base64 content). The result is the exact bytes
handed to the provider: CRLF line ends, the job's deterministic ``Message-ID``, and a
``Bcc`` header that API providers use for delivery and strip from what recipients see.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping, Sequence
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from mailbox_worker.policy.addresses import ascii_domain

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
