"""RFC 822 messages as Gmail receives them: the ``raw`` field, the headers it reads, its ids.

Gmail keeps the bytes it is given (docs/providers.md D2: the recipients are read from the
To/Cc/Bcc headers); it only adds a ``Message-ID`` when the message has none (as Gmail does; the
form of the added id is a best guess).
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import email.utils
import itertools
import secrets
from dataclasses import dataclass

from . import gmail_errors as errors

_ids = itertools.count(secrets.randbelow(1 << 16))


class MessageFormatError(ValueError):
    """The ``raw`` field is not base64."""


@dataclass(frozen=True)
class Headers:
    """What Gmail reads from a message's header."""

    message_id: str
    subject: str
    sender: str
    to: list[str]
    cc: list[str]
    bcc: list[str]

    @property
    def recipients(self) -> list[str]:
        """To, Cc and Bcc together."""
        return self.to + self.cc + self.bcc


def decode_raw(value: object) -> bytes:
    """The bytes of a ``raw`` field: base64url, padding optional (standard base64 accepted)."""
    if not isinstance(value, str):
        raise MessageFormatError("raw must be a string")
    text = value.strip().replace("+", "-").replace("/", "_").rstrip("=")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as problem:
        raise MessageFormatError(str(problem)) from problem


def read_headers(raw: bytes) -> Headers:
    """The header fields Gmail reads; a malformed address list is ``400 Invalid <Field> header``."""
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)

    def addresses(name: str) -> list[str]:
        values = [str(value) for value in parsed.get_all(name, [])]
        found = [address for _, address in email.utils.getaddresses(values) if address]
        if values and any("@" not in address for address in found):
            raise errors.invalid_argument(f"Invalid {name} header")
        return found

    return Headers(
        message_id=str(parsed.get("Message-ID", "")).strip(),
        subject=str(parsed.get("Subject", "")),
        sender=email.utils.parseaddr(str(parsed.get("From", "")))[1],
        to=addresses("To"),
        cc=addresses("Cc"),
        bcc=addresses("Bcc"),
    )


def with_message_id(raw: bytes) -> bytes:
    """``raw`` itself if it has a Message-ID; otherwise with one added at the top."""
    if message_id_of(raw):
        return raw
    identifier = f"<CA+{secrets.token_urlsafe(30)}@mail.gmail.com>".encode("ascii")
    newline = b"\r\n" if b"\r\n" in raw[:2000] else b"\n"
    return b"Message-ID: " + identifier + newline + raw


def message_id_of(raw: bytes) -> str:
    """The Message-ID of ``raw`` (empty when absent), without judging the other fields."""
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    return str(parsed.get("Message-ID", "")).strip()


def new_message_id(now: float) -> str:
    """A Gmail message id: 16 hex digits growing with time, like Google's."""
    return f"{int(now * 1000) & ((1 << 44) - 1):011x}{next(_ids) & 0xFFFFF:05x}"


def new_draft_id() -> str:
    """A draft id in the ``r-…`` form (docs/providers.md D2, unconfirmed)."""
    return f"r-{secrets.randbelow(10**19):019d}"
