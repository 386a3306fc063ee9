"""Mail formats Graph accepts and returns: base64 MIME, the JSON ``message`` resource, RFC 822.

Whatever form a message arrives in, the sandbox stores RFC 822 bytes (as Exchange does): a MIME
upload is stored byte for byte; a JSON message is rendered to MIME here. ``parse`` reads back
what tests and the Graph answers need (recipients, attachments, Message-ID, the body and its
plain-text ``bodyPreview``).

Graph reads the property and parameter names of a JSON body regardless of case (the SDKs send
``Message``/``SaveToSentItems``, the documentation ``message``/``saveToSentItems``):
``fold_names`` lower-cases every name of a request document before it is read (*chosen* for
the properties, docs/providers.md B1). A recipient address that is not an address is
``400 ErrorInvalidRecipients`` (B4).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
import secrets
from dataclasses import dataclass
from email import policy
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from email.utils import getaddresses, make_msgid
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

from .state import StoredAttachment, StoredMessage, attachment_parts

_WHITESPACE = b" \t\n\r\x0b\x0c"  # ASCII whitespace, left out of a base64 upload
_TEXT_WHITESPACE = re.compile(r"\s+")
_ADDRESS = re.compile(r"^[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+\.[^@\s<>()\[\],;:\"]+$")
PREVIEW_LENGTH = 255


class MessageFormatError(ValueError):
    """The request's message cannot be understood; ``code`` is the Graph error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class ParsedMessage:
    """What the sandbox needs to know about an RFC 822 message."""

    subject: str
    sender: str
    to: list[str]
    cc: list[str]
    bcc: list[str]
    message_id: str | None
    attachments: list[StoredAttachment]
    preview: str
    body_type: str = "text"  # Graph's body.contentType: "text" or "html"
    body: str = ""


def decode_mime_upload(body: bytes) -> bytes:
    """The RFC 822 bytes of a ``text/plain`` base64 MIME upload."""
    compact = body.translate(None, _WHITESPACE)
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as problem:
        raise MessageFormatError(
            "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content."
        ) from problem
    if not raw.strip():
        raise MessageFormatError(
            "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content."
        )
    return raw


def _addresses(message: EmailMessage, header: str) -> list[str]:
    # The raw values: getaddresses reads folded and encoded headers alike, and building the
    # policy's header objects for them cost more than the rest of accepting a message.
    name = header.lower()
    values = [str(value) for key, value in message.raw_items() if key.lower() == name]
    return [address for _, address in getaddresses(values) if address]


def header_block(raw: bytes) -> bytes:
    """The header section of ``raw``: up to the first empty line (CRLF or LF), or all of it."""
    crlf = raw.find(b"\r\n\r\n")
    end = crlf if crlf >= 0 else len(raw)
    lf = raw.find(b"\n\n", 0, end)
    return raw[: lf if lf >= 0 else end]


def parse(raw: bytes, *, headers_only: bool = False) -> ParsedMessage:
    """Recipients, subject, Message-ID and, unless ``headers_only``, the body and attachments
    of ``raw``. Sending needs only the headers: reading just them keeps the sandbox's cost per
    message independent of the attachments' size (``StoredMessage.attachments`` decodes those
    when asked)."""
    if headers_only:
        headers = BytesHeaderParser(policy=policy.default).parsebytes(header_block(raw))
        assert isinstance(headers, EmailMessage)
        return _parsed(headers, [], "", "text")
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    # Exchange keeps the HTML alternative when there is one, as Graph's ``body`` shows.
    body_part = message.get_body(preferencelist=("html", "plain"))
    try:
        content = str(body_part.get_content()) if body_part is not None else ""
    except (LookupError, ValueError, AttributeError):  # unknown charset, malformed part
        content = ""
    html_body = body_part is not None and body_part.get_content_subtype() == "html"
    return _parsed(message, attachment_parts(message), content, "html" if html_body else "text")


def _parsed(
    message: EmailMessage, attachments: list[StoredAttachment], content: str, body_type: str
) -> ParsedMessage:
    senders = _addresses(message, "From")
    message_id = message.get("Message-ID")
    return ParsedMessage(
        subject=str(message.get("Subject", "")),
        sender=senders[0] if senders else "",
        to=_addresses(message, "To"),
        cc=_addresses(message, "Cc"),
        bcc=_addresses(message, "Bcc"),
        message_id=str(message_id).strip() if message_id else None,
        attachments=attachments,
        preview=body_preview(content, body_type),
        body_type=body_type,
        body=content,
    )


class _TextOf(HTMLParser):
    """The text of an HTML document: character references decoded, scripts and styles left out."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head", "title"):
            self._skipping += 1
        elif tag in ("br", "p", "div", "li", "tr", "td", "th", "h1", "h2", "h3"):
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head", "title") and self._skipping:
            self._skipping -= 1
        elif tag in ("p", "div", "li", "tr", "td", "th", "h1", "h2", "h3"):
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def body_preview(content: str, body_type: str) -> str:
    """Graph's ``bodyPreview``: the body as plain text (tags stripped, entities decoded,
    whitespace collapsed), at most its first 255 characters."""
    if body_type == "html":
        reader = _TextOf()
        reader.feed(content)
        reader.close()
        text = "".join(reader.parts)
    else:
        text = content
    return _TEXT_WHITESPACE.sub(" ", text).strip()[:PREVIEW_LENGTH]


def fold_names(value: Any) -> Any:
    """A JSON document with every property name lower-cased (values untouched)."""
    if isinstance(value, dict):
        return {str(key).lower(): fold_names(item) for key, item in value.items()}
    if isinstance(value, list):
        return [fold_names(item) for item in value]
    return value


def invalid_recipient(address: str) -> MessageFormatError:
    """Graph's answer to a recipient that is not an address (docs/providers.md B4)."""
    return MessageFormatError(
        "ErrorInvalidRecipients",
        f"At least one recipient isn't valid., Recipient '{address}' isn't resolved. All "
        "recipients must be resolved before a message can be submitted.",
    )


def is_address(address: str) -> bool:
    """Whether ``address`` is an SMTP address (``local@domain.tld``), as Exchange resolves it."""
    return bool(_ADDRESS.match(address))


def _recipient_list(message: dict[str, Any], key: str) -> list[tuple[str, str]]:
    result = []
    entries = message.get(key) or []
    for entry in entries if isinstance(entries, list) else [entries]:
        email = entry.get("emailaddress", {}) if isinstance(entry, dict) else {}
        address = email.get("address") if isinstance(email, dict) else None
        if not isinstance(address, str) or not is_address(address.strip()):
            raise invalid_recipient(str(address or ""))
        result.append((str(email.get("name") or ""), address.strip()))
    return result


def _header_value(pairs: list[tuple[str, str]]) -> list[Address]:
    try:
        return [Address(display_name=name, addr_spec=address) for name, address in pairs]
    except (ValueError, IndexError, HeaderParseError) as problem:
        raise invalid_recipient(", ".join(address for _, address in pairs)) from problem


def mime_from_json(message: dict[str, Any], mailbox: str, display_name: str) -> bytes:
    """Render a Graph JSON ``message`` (names folded by ``fold_names``) as RFC 822 bytes, the
    way Exchange stores it."""
    if not isinstance(message, dict):
        raise MessageFormatError("ErrorInvalidRequest", "The message property is not valid.")
    email = EmailMessage()
    sender = _recipient_list({"from": [message["from"]]}, "from") if message.get("from") else []
    email["From"] = _header_value(sender or [(display_name, mailbox)])
    for key, header in (
        ("torecipients", "To"),
        ("ccrecipients", "Cc"),
        ("bccrecipients", "Bcc"),
        ("replyto", "Reply-To"),
    ):
        pairs = _recipient_list(message, key)
        if pairs:
            email[header] = _header_value(pairs)
    email["Subject"] = str(message.get("subject") or "")
    email["Message-ID"] = str(
        message.get("internetmessageid") or make_msgid(domain="sandbox.local")
    )
    for header in message.get("internetmessageheaders") or []:
        name, value = header.get("name", ""), header.get("value", "")
        if not str(name).lower().startswith("x-"):
            raise MessageFormatError(
                "InvalidInternetMessageHeader",
                "The internet message header name should start with 'x-' or 'X-'.",
            )
        email[str(name)] = str(value)
    body = message.get("body") or {}
    content = str(body.get("content") or "")
    subtype = "html" if str(body.get("contenttype", "text")).lower() == "html" else "plain"
    email.set_content(content, subtype=subtype)
    for attachment in message.get("attachments") or []:
        _attach(email, attachment)
    return email.as_bytes(policy=policy.SMTP)


def _attach(email: EmailMessage, attachment: dict[str, Any]) -> None:
    try:
        data = base64.b64decode(str(attachment.get("contentbytes", "")), validate=True)
    except (binascii.Error, ValueError) as problem:
        raise MessageFormatError(
            "ErrorInvalidRequest", "The contentBytes of the attachment is not valid base64."
        ) from problem
    content_type = str(attachment.get("contenttype") or "application/octet-stream")
    maintype, _, subtype = content_type.partition("/")
    email.add_attachment(
        data,
        maintype=maintype or "application",
        subtype=subtype or "octet-stream",
        filename=str(attachment.get("name") or "attachment"),
    )


def graph_id(prefix: str = "AAMkA") -> str:
    """An opaque id in the shape of Exchange's (base64, ending in ``=``)."""
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(104)).decode("ascii")


def graph_time(moment: datetime.datetime) -> str:
    """``moment`` (UTC) in Graph's timestamp format."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _recipients_json(addresses: list[str]) -> list[dict[str, Any]]:
    return [{"emailAddress": {"name": address, "address": address}} for address in addresses]


def message_resource(
    stored: StoredMessage, origin: str, user_id: str, display_name: str, parsed: ParsedMessage
) -> dict[str, Any]:
    """The Graph ``message`` JSON the create-message call answers with."""
    preview, body_type, body = parsed.preview, parsed.body_type, parsed.body
    sender = {"emailAddress": {"name": display_name, "address": stored.sender or stored.mailbox}}
    return {
        "@odata.context": f"{origin}/v1.0/$metadata#users('{user_id}')/messages/$entity",
        "@odata.etag": f'W/"{graph_id("CQAAABYAAAA")[:40]}"',
        "id": stored.id,
        "createdDateTime": stored.created_at,
        "lastModifiedDateTime": stored.created_at,
        "changeKey": graph_id("CQAAABYAAAA")[:40],
        "categories": [],
        "receivedDateTime": stored.created_at,
        "sentDateTime": stored.created_at,
        "hasAttachments": bool(stored.attachments),
        "internetMessageId": stored.internet_message_id,
        "subject": stored.subject,
        "bodyPreview": preview,
        "importance": "normal",
        "parentFolderId": graph_id("AQMkA")[:120],
        "conversationId": stored.conversation_id,
        "isDeliveryReceiptRequested": False,
        "isReadReceiptRequested": False,
        "isRead": True,
        "isDraft": stored.folder == "drafts",
        "webLink": f"{origin}/owa/?ItemID={quote(stored.id, safe='')}"
        "&exvsurl=1&viewmodel=ReadMessageItem",
        "inferenceClassification": "focused",
        "body": {"contentType": body_type, "content": body},
        "sender": sender,
        "from": sender,
        "toRecipients": _recipients_json(stored.to),
        "ccRecipients": _recipients_json(stored.cc),
        "bccRecipients": _recipients_json(stored.bcc),
        "replyTo": [],
        "flag": {"flagStatus": "notFlagged"},
    }
