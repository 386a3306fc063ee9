"""Build the RFC 5322 message of a job with the standard library's ``email`` package.

The payload is the ``message`` object of the enqueue request (addresses as
``{"address", "name"}``, attachments with base64 content). The result is the exact bytes
handed to the provider: CRLF line ends, lines of at most 998 characters, the job's
deterministic ``Message-ID``, and a ``Bcc`` header that API providers use for delivery and
strip from what recipients see.

Why it is built this way (issue 9, a daemon CPU budget of 2 ms per job; docs/performance.md,
"Building the message"). The modern ``email`` API (``EmailMessage`` under ``policy.SMTP``)
cost 2.8 ms of CPU per 100 KB invoice and the size bound at intake another 1.8 ms: about 30
header objects parsed and refolded by ``_header_value_parser``, every line of every body split
again by the generator (a regular expression over the 137 KB of base64), the attachment
decoded and encoded again. Here each header value is encoded once by the ``email`` package's
encoders (``email.utils.formataddr``, ``email.base64mime`` for RFC 2047 words,
``email.utils.encode_rfc2231`` for file names, ``email.utils.format_datetime``) and stored in
an ``email.message.Message`` under a ``Compat32`` policy that writes stored values as they
are; bodies are encoded once (7bit/8bit, else quoted-printable or base64 by ``binascii``,
whichever is shorter, as ``policy.SMTP`` chose) and the ``BytesGenerator`` writes them
without splitting their lines again; the attachment's base64 is the request's own, checked
(what ``decode_attachment`` accepts) and cut into lines, not decoded and encoded again.
``bench/mime_build.py``, both builders in one process, CPU µs per call, medians of 3 runs,
before -> after: the invoice (2 To, 1 Cc, a non-ASCII subject, text and HTML, a 100 KB PDF)
2,785 -> 203 (0.073), its ``message_size_bound`` 1,797 -> 98 (0.054); text only 569 -> 17
(0.029); a 10 MB attachment 119,039 -> 64,701 (0.54: what is left is mostly the generator
copying each part into its parent's buffer). ``message_size_bound`` is now the exact size.

The message parses to what the previous builder's did (same header values, parts, bodies and
attachment bytes; tests/unit/test_mime_equivalence.py), except where that one lost part of a
value when it folded: a comma between two addresses written as an encoded word (an address
lost), a space dropped or added in a long subject. What is rare and irregular goes through
``policy.SMTP`` as before, header by header: an address whose local part is not a plain ASCII
dot-atom, a mailbox too long for one line, a non-ASCII file name too long for one line (RFC
2231 continuations).
"""

from __future__ import annotations

import binascii
import datetime as dt
import io
import re
import secrets
from collections.abc import Mapping, Sequence
from email import base64mime, policy
from email.generator import BytesGenerator
from email.headerregistry import Address
from email.message import Message
from email.utils import encode_rfc2231, format_datetime, formataddr, quote
from typing import Any

from mailbox_worker.policy.domains import ascii_domain
from mailbox_worker.policy.slow_steps import SLOW_STEPS_ON_THE_LOOP

SMTP_POLICY = policy.SMTP.clone(max_line_length=998)
"""The modern policy, for the rare headers it folds (see the module docstring)."""

MAX_LINE = 998
"""RFC 5322's limit on a line, CRLF excluded."""

_WORD_BYTES = 45
"""Bytes of text per RFC 2047 encoded word: ``=?utf-8?b?`` and ``?=`` around 60 characters of
base64, within RFC 2047's 75."""

_BASE64_LINE = MAX_LINE // 4 * 4
"""Characters of base64 per line (996, 747 bytes), as ``policy.SMTP`` wrote them: the line
length ``message_size_bound`` computes with."""

_PAD = ord("=")
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
"""A local part or domain written as is (RFC 5322 dot-atom, ASCII)."""


def decode_attachment(content_base64: str) -> bytes:
    """Strict base64 decoding; raises ``ValueError`` on anything that is not base64."""
    return binascii.a2b_base64(content_base64, strict_mode=True)


def build_message(
    payload: Mapping[str, Any],
    *,
    message_id: str,
    sender: str,
    date: dt.datetime | None = None,
    folded: Mapping[str, str] | None = None,
) -> bytes:
    """The RFC 5322 bytes of ``payload``, sent from ``sender`` with ``message_id``.

    ``payload["from"]`` may carry a display name; its address is the mailbox's own
    (the intake checks that). ``folded`` is ``folded_address_lists(payload)``, when the caller
    computed it beforehand. Raises ``ValueError`` on undecodable attachments, on a message
    without a body and on a header value with a line break.
    """
    bodies = [
        _base64_body(_checked_base64(item["content_base64"]))
        for item in payload.get("attachments") or ()
    ]
    return _flatten(_message(payload, message_id, sender, date, bodies, folded))


ADDRESS_FIELDS = ("to", "cc", "bcc", "reply_to")
"""The payload's lists of addresses, the sender's aside."""
_ADDRESS_HEADERS = {"to": "To", "cc": "Cc", "bcc": "Bcc", "reply_to": "Reply-To"}


def folded_address_lists(payload: Mapping[str, Any]) -> dict[str, str]:
    """The values of ``payload``'s address headers (To, Cc, Bcc, Reply-To), by header name,
    as ``build_message`` writes them. Folding a list costs a few µs an address, and about
    100 µs where the email package's header classes fold it (``folding_steps``): the intake
    folds the lists of a request with many addresses beside the loop and hands them to the
    size checks (docs/performance.md, "The addresses' checks"). Raises ``ValueError`` as
    ``build_message`` would."""
    return {
        header: _addresses(header, payload[field])
        for field, header in _ADDRESS_HEADERS.items()
        if field == "to" or payload.get(field)
    }


def addresses_in(payload: Mapping[str, Any]) -> int:
    """How many addresses ``payload``'s lists hold (the sender's aside)."""
    return sum(len(payload.get(field) or ()) for field in ADDRESS_FIELDS)


def folding_steps(payload: Mapping[str, Any]) -> int:
    """The slow steps (``policy/slow_steps.py``) of folding ``payload``'s lists once their
    domains are spelled: one per address of a list the email package's header classes fold
    (one of its addresses is not a dot-atom at a dot-atom, about 100 to 500 µs each), and
    more than the loop's whole budget for an address that may not fit on a line (a long name
    outside ASCII: 15 to 35 ms each). Errs on the side of counting."""
    return _list_steps(payload, spelled=True)


def builds_quickly(payload: Mapping[str, Any]) -> bool:
    """Whether ``build_message`` of ``payload`` takes a few milliseconds at most: whether its
    lists' slow steps (the sender's aside) are at most ``SLOW_STEPS_ON_THE_LOOP``. Those of
    ``folding_steps``, and an internationalised domain's, which the builder encodes (0.3 to
    1 ms when it is new): a list holding one counts each of its addresses
    (docs/performance.md, "The addresses' checks")."""
    return _list_steps(payload, spelled=False) <= SLOW_STEPS_ON_THE_LOOP


_TOO_LONG_STEPS = SLOW_STEPS_ON_THE_LOOP + 1
"""An address that may not fit on a line sends the list to the modern policy, which splits its
name's encoded word: 15 to 35 ms each on the development machine."""


_LONGEST_ADDRESS = "a" * 64 + "@" + "b" * 189
"""An address of 254 octets, the longest a mailbox's own address can be (RFC 5321)."""


def _list_steps(payload: Mapping[str, Any], *, spelled: bool) -> int:
    steps = 0
    lists = [(header, payload.get(field) or ()) for field, header in _ADDRESS_HEADERS.items()]
    sender = payload.get("from")
    if not spelled and isinstance(sender, Mapping) and sender.get("name"):
        # The worker writes the sender's name beside the mailbox's own address (at most 254
        # octets, spelled once per mailbox): only a name that may pass the line costs.
        longest = {"address": _LONGEST_ADDRESS, "name": sender["name"]}
        steps += _steps(longest, MAX_LINE - len("From") - 3, True)
    for header, items in lists:
        line = MAX_LINE - len(header) - 3  # as ``_addresses`` measures
        costs = [_steps(item, line, spelled) for item in items]
        if any(costs):
            steps += sum(max(cost, 1) for cost in costs)
    return steps


def _steps(item: Mapping[str, Any], line: int, spelled: bool) -> int:
    """0 when ``_mailbox`` writes ``item`` as it is within ``line`` characters;
    ``_TOO_LONG_STEPS`` when it may pass the line, as it is or folded by the email package
    (which then splits its name's encoded word); else 1 when it cannot be written as it is
    (or, ``spelled`` false, when its domain needs encoding)."""
    local, _, domain = str(item.get("address", "")).rpartition("@")
    written: str | None = domain
    if not domain.isascii():
        try:
            written = ascii_domain(domain) if spelled else None
        except ValueError:
            written = None
    plain = written is not None and local.isascii() and _dot_atoms(local, written)
    name = str(item.get("name") or "")
    if name:
        # As written: quoted with escapes, or one encoded word (UTF-8, base64), and " <…>";
        # the local part quoted, the domain at its longest when not spelled.
        longest_name = max(2 * len(name) + 2, 14 + 4 * -(-len(name.encode("utf-8")) // 3))
        longest_local = len(local) if plain else 2 * len(local.encode("utf-8")) + 2
        longest_domain = len(written) if written is not None else 253
        if longest_local + 1 + longest_domain + longest_name + 3 > line:
            return _TOO_LONG_STEPS
    elif plain and written is not None and len(local) + 1 + len(written) > line:
        return _TOO_LONG_STEPS
    return 0 if plain else 1


def _dot_atoms(local: str, domain: str) -> bool:
    """Whether ``local@domain`` (the domain in ASCII form) is written as it is: both dot-atoms,
    and no "=?" that a reader could take for an encoded word."""
    return (
        _DOT_ATOM.fullmatch(local) is not None
        and _DOT_ATOM.fullmatch(domain) is not None
        and "=?" not in local
    )


def recipients(payload: Mapping[str, Any]) -> Sequence[str]:
    """Every envelope recipient (To, Cc, Bcc) of a payload."""
    return [item["address"] for field in ("to", "cc", "bcc") for item in payload.get(field) or ()]


def message_size_bound(
    payload: Mapping[str, Any],
    *,
    message_id: str,
    sender: str,
    decoded_sizes: Sequence[int],
    folded: Mapping[str, str] | None = None,
) -> int:
    """At least the length of ``build_message(payload, …)``, and at most
    ``BOUND_SLACK_PER_PART`` bytes per MIME part more, without encoding the attachments.

    It is in fact the exact length (tests/unit/test_message_size_bound.py): ``decoded_sizes``
    are the byte counts of ``payload``'s attachments, in order (the intake decodes them once,
    to check them). The message is built with empty attachments (headers, bodies and parts
    as sent; the boundaries have a fixed length) and each attachment's base64 is added by
    arithmetic: 4 characters per 3 bytes, padded, in lines of 996 characters (747 bytes),
    each ending in CRLF. ``folded`` is ``folded_address_lists(payload)``, when the caller
    computed it beforehand. Raises ``ValueError`` when the message cannot be built (as
    ``build_message``).
    """
    attachments = payload.get("attachments") or ()
    if len(decoded_sizes) != len(attachments):
        raise ValueError("one decoded size per attachment is needed")
    empty = [""] * len(attachments)
    size = len(_flatten(_message(payload, message_id, sender, None, empty, folded)))
    per_line = _BASE64_LINE // 4 * 3
    for count in decoded_sizes:
        size += 4 * -(-count // 3) + 2 * -(-count // per_line)
    return size


def message_size_ceiling(
    payload: Mapping[str, Any],
    *,
    message_id: str,
    sender: str,
    decoded_sizes: Sequence[int],
    folded: Mapping[str, str] | None = None,
) -> int | None:
    """A quick upper bound of ``message_size_bound`` (so of the built message's length),
    from the payload's lengths alone, nothing encoded or folded; None when the payload has
    something only building it checks (no body, a line break in a header value, an address
    that is not a plain dot-atom with a valid domain), for which the caller must compute the
    exact bound (which raises ``ValueError`` as ``build_message`` would).

    Each piece is counted at its worst encoding: a header value (encoded words, folding) at
    4 bytes per UTF-8 byte plus 100 per header; an address at twice its length as written
    (name encoded, domain in IDNA form) plus 40; a body (CRLF line ends,
    then quoted-printable or base64) at 4 per UTF-8 byte plus 64; a file name (quoted, or
    RFC 2231 continuations) at 8 per UTF-8 byte plus 200; an attachment's base64 exactly as
    ``message_size_bound`` counts it; and 400 bytes per part for its boundary, its other
    headers and the top-level ones (Date, Message-ID, MIME-Version). It is some kilobytes
    above the exact size, which the intake computes only when this is over the provider's
    limit (tests/unit/test_message_size_bound.py checks it is never below it).

    ``folded``, ``folded_address_lists(payload)`` computed beforehand, counts the lists as
    they are written, exactly, without a look at each address.
    """
    sender_item = {"address": sender, "name": (payload.get("from") or {}).get("name")}
    lists = [[sender_item]]
    if folded is None:
        lists += [list(payload.get(field) or ()) for field in ADDRESS_FIELDS]
    attachments = payload.get("attachments") or ()
    values = [payload.get("subject") or "", message_id]
    values += [str(item.get("name") or "") for items in lists for item in items]
    values += [str(a.get(key) or "") for a in attachments for key in ("filename", "content_type")]
    if payload.get("text") is None and payload.get("html") is None:
        return None
    if any("\r" in value or "\n" in value for value in values):
        return None
    try:
        rendered = [[_mailbox(item) for item in items] for items in lists]
    except ValueError:  # a domain without an IDNA form
        return None
    if any(mailbox is None for mailboxes in rendered for mailbox in mailboxes):
        return None

    def utf8(value: Any) -> int:
        return len(str(value or "").encode("utf-8"))

    size = 400 * (3 + len(attachments)) + 4 * utf8(message_id) + 100 + 4 * utf8(values[0])
    for mailboxes in rendered:
        # Each address as it is written (its name encoded, its domain in IDNA form, which
        # NFKC can make far longer than the UTF-8: "㍿" is "xn--6oqv20b1zgzxr"), twice over
        # for a list the modern policy folds instead.
        size += 100 + sum(2 * len(mailbox or "") + 40 for mailbox in mailboxes)
    if folded is not None:
        size += sum(len(header) + len(value) + 4 for header, value in folded.items())
    for body in ("text", "html"):
        if payload.get(body) is not None:
            size += 64 + 4 * utf8(payload[body])
    per_line = _BASE64_LINE // 4 * 3
    for attachment, count in zip(attachments, decoded_sizes, strict=True):
        size += 200 + 8 * utf8(attachment.get("filename"))
        size += 4 * utf8(attachment.get("content_type"))
        size += 4 * -(-count // 3) + 2 * -(-count // per_line)
    return size


BOUND_SLACK_PER_PART = 16
"""Bytes ``message_size_bound`` may exceed the built message by, per part boundary line (it
is exact today; the contract leaves room for a builder whose boundaries may grow)."""


class _Part(Message):
    """A MIME part whose headers and body are stored encoded, as they are to be written."""

    encoded_body = ""
    """The body: ASCII (8bit bytes as surrogate escapes), CRLF line ends, lines ≤ 998."""


class _Encoded(policy.Compat32):
    """Stores header values as given and writes them as they are: they arrive encoded and
    folded (ASCII, continuation lines joined by CRLF and a space), so the ``Header`` object
    ``Compat32`` would build to fold them again is not needed."""

    def fold(self, name: str, value: str) -> str:
        return f"{name}: {value}\r\n"

    def fold_binary(self, name: str, value: str) -> bytes:
        return f"{name}: {value}\r\n".encode("ascii")


_POLICY = _Encoded(linesep="\r\n", max_line_length=MAX_LINE, mangle_from_=False)


class _Generator(BytesGenerator):
    """The standard generator, writing a part's body as encoded: ``Generator._handle_text``
    would split it into lines with a regular expression only to join them with CRLF again
    (about 0.3 ms per 100 KB attachment). Every leaf part, of any type, goes through it."""

    def _handle_text(self, msg: _Part) -> None:
        self.write(msg.encoded_body)

    _writeBody = _handle_text


def _flatten(message: _Part) -> bytes:
    out = io.BytesIO()
    _Generator(out, policy=_POLICY).flatten(message)
    return out.getvalue()


def _message(
    payload: Mapping[str, Any],
    message_id: str,
    sender: str,
    date: dt.datetime | None,
    attachment_bodies: Sequence[str],
    folded: Mapping[str, str] | None = None,
) -> _Part:
    """The part tree of ``payload``, its top-level headers first; ``attachment_bodies`` are
    the encoded bodies of its attachments, in order; ``folded``, when given, its address
    lists as ``folded_address_lists`` wrote them."""
    top = _Part(policy=_POLICY)
    sender_name = (payload.get("from") or {}).get("name") or ""
    top["From"] = _addresses("From", [{"address": sender, "name": sender_name}])
    lists = folded_address_lists(payload) if folded is None else folded
    for header, value in lists.items():
        top[header] = value
    top["Subject"] = _unstructured("Subject", payload["subject"])
    top["Date"] = format_datetime(date or dt.datetime.now(dt.UTC))
    top["Message-ID"] = _single_line(message_id)
    top["MIME-Version"] = "1.0"
    attachments = payload.get("attachments") or ()
    if not attachments:
        return _body(payload.get("text"), payload.get("html"), top)
    parts = [_body(payload.get("text"), payload.get("html"), _Part(policy=_POLICY))]
    parts.extend(map(_attachment, attachments, attachment_bodies))
    return _multipart("mixed", parts, top)


def _body(text: str | None, html: str | None, part: _Part) -> _Part:
    """``part`` made the body: the text, the HTML, or both as multipart/alternative."""
    if text is not None and html is not None:
        plain = _text(text, "plain", _Part(policy=_POLICY))
        return _multipart("alternative", [plain, _text(html, "html", _Part(policy=_POLICY))], part)
    if text is not None:
        return _text(text, "plain", part)
    if html is not None:
        return _text(html, "html", part)
    raise ValueError("a message needs a text or an HTML body")


def _multipart(subtype: str, parts: Sequence[_Part], container: _Part) -> _Part:
    # Our own boundary, so that the generator does not search the whole message for one
    # that its text does not contain (about 0.8 ms per 100 KB PDF): "=_" cannot occur in
    # base64 or quoted-printable, and 128 random bits not in plain text. Its length is fixed,
    # which message_size_bound counts on.
    container["Content-Type"] = f'multipart/{subtype}; boundary="=_{secrets.token_hex(16)}"'
    for part in parts:
        container.attach(part)
    return container


def _text(text: str, subtype: str, part: _Part) -> _Part:
    """``part`` made a text part in UTF-8, encoded as ``policy.SMTP``'s content manager
    chose: as it is (7bit, else 8bit) when no line is longer than 998 bytes, else the shorter
    of quoted-printable and base64. Line ends become CRLF and the body ends with one."""
    lines = text.encode("utf-8").splitlines()
    body = b"\r\n".join(lines) + b"\r\n"
    if max(map(len, lines), default=0) <= MAX_LINE:
        cte = "7bit" if body.isascii() else "8bit"
        encoded = body.decode("ascii", "surrogateescape")
    else:
        quoted = binascii.b2a_qp(body, istext=True).decode("ascii")
        base64 = _base64_body(binascii.b2a_base64(body, newline=False).decode("ascii"))
        cte, encoded = ("quoted-printable", quoted)
        if len(base64) < len(quoted):
            cte, encoded = ("base64", base64)
    part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
    part["Content-Transfer-Encoding"] = cte
    part.encoded_body = encoded
    return part


def _attachment(attachment: Mapping[str, Any], encoded_body: str) -> _Part:
    part = _Part(policy=_POLICY)
    part["Content-Type"] = _single_line(attachment["content_type"])
    part["Content-Transfer-Encoding"] = "base64"
    part["Content-Disposition"] = _disposition(attachment["filename"])
    part.encoded_body = encoded_body
    return part


def _disposition(filename: str) -> str:
    """``attachment`` with ``filename``: quoted when it is printable ASCII, else RFC 2231
    (``filename*=utf-8''…``, percent-encoded UTF-8)."""
    _single_line(filename)
    if filename.isascii() and filename.isprintable():
        return f'attachment; filename="{quote(filename)}"'
    value = f"attachment; filename*={encode_rfc2231(filename, 'utf-8')}"
    if len("Content-Disposition: ") + len(value) <= MAX_LINE:
        return value
    # Too long for one line: RFC 2231 continuations (filename*0*=…; filename*1*=…), which the
    # modern policy writes; rare (more than about 150 accented characters).
    modern = Message(policy=SMTP_POLICY)
    modern.add_header("Content-Disposition", "attachment", filename=filename)
    return _modern_fold("Content-Disposition", modern["Content-Disposition"])


def _addresses(name: str, items: Sequence[Mapping[str, Any]]) -> str:
    """An address list, folded between addresses where a line would pass 78 characters."""
    mailboxes = [_mailbox(item) for item in items]
    plain = [mailbox for mailbox in mailboxes if mailbox is not None]
    if len(plain) < len(mailboxes) or max(map(len, plain)) > MAX_LINE - len(name) - 3:
        # An irregular local part (quoted, non-ASCII) or a mailbox too long for a line:
        # written by the modern policy, as it was before this module was made cheap.
        return _modern_fold(name, [_address(item) for item in items])
    pieces: list[str] = []
    column = len(name) + 2
    for mailbox in plain:
        if pieces:
            if column + 2 + len(mailbox) > 78:
                pieces.append(",\r\n ")
                column = 1
            else:
                pieces.append(", ")
                column += 2
        pieces.append(mailbox)
        column += len(mailbox)
    return "".join(pieces)


def _mailbox(item: Mapping[str, Any]) -> str | None:
    """``Name <local@domain>`` with the domain in its ASCII form and a name that is not
    printable ASCII as an RFC 2047 encoded word; None for a local part or domain that is not a
    plain ASCII dot-atom."""
    local, _, domain = str(item["address"]).rpartition("@")
    domain = ascii_domain(domain)
    if not _dot_atoms(local, domain):
        return None
    address = f"{local}@{domain}"
    name = _single_line(item.get("name") or "")
    if not name:
        return address
    if name.isascii() and name.isprintable() and "=?" not in name:
        return formataddr((name, address))  # quoted when it has specials
    # One encoded word, however long: parsers differ on the space between two encoded words
    # in a display name (RFC 2047 drops it, Python's keeps it); a name of up to 200
    # characters fits in one line. Spaces around it are dropped, as they were.
    return formataddr((name.strip(" "), address), "utf-8")


def _address(item: Mapping[str, Any]) -> Address:
    local, _, domain = str(item["address"]).rpartition("@")
    return Address(display_name=item.get("name") or "", username=local, domain=ascii_domain(domain))


def _unstructured(name: str, value: str) -> str:
    """A header of text (the subject): as it is when it is printable ASCII that fits on one
    line and cannot be read as an encoded word, else RFC 2047 encoded words."""
    _single_line(value)
    if (
        value.isascii()
        and value.isprintable()
        and "=?" not in value
        and len(name) + 2 + len(value) <= MAX_LINE
    ):
        return value
    return _encoded_words(value)


def _encoded_words(value: str) -> str:
    """``value`` as RFC 2047 encoded words (UTF-8, base64, by ``email.base64mime``) of at
    most 75 characters, one per line (CRLF and a space between them), never splitting a
    character. ``email.header.Header`` does the same by trying every prefix of the text
    against the line length: 46 µs for a subject of 36 characters, 167 µs for 400."""
    data = value.encode("utf-8")
    words = []
    start = 0
    while start < len(data):
        end = min(start + _WORD_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # inside a character
            end -= 1
        words.append(base64mime.header_encode(data[start:end], "utf-8"))
        start = end
    return "\r\n ".join(words)


def _modern_fold(name: str, value: Any) -> str:
    """``value`` folded by the modern policy, without its ``name: `` and final CRLF."""
    folded: str = SMTP_POLICY.header_factory(name, value).fold(policy=SMTP_POLICY)
    return folded[len(name) + 2 : -2]


def _single_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("header values may not contain linefeed or carriage return characters")
    return value


def _checked_base64(value: str) -> str:
    """``value`` with regular padding, when ``decode_attachment`` (strict base64, as
    ``base64.b64decode(value, validate=True)``) accepts it: the alphabet only, then the
    padding that completes the last group, or any after a complete one. Raises
    ``ValueError`` on anything else (a non-ASCII character: ``UnicodeEncodeError``). Checked
    without decoding (about 40 µs per 100 KB; decoding takes 240 µs), with the same answers
    as ``binascii``'s strict mode (tests/unit/test_mime_equivalence.py)."""
    data = value.encode("ascii")
    length = len(data)
    while length and data[length - 1] == _PAD:
        length -= 1
    padding = len(data) - length
    regular = -length % 4  # the padding that completes the last group
    if data.translate(None, _BASE64_ALPHABET) != b"=" * padding or regular == 3:
        raise ValueError("content_base64 is not base64")
    if padding < regular or (padding > regular and (regular or not length)):
        raise ValueError("content_base64 is not base64: incorrect padding")
    return value if padding == regular else value[:length]


def _base64_body(value: str) -> str:
    """Base64 text in lines of 996 characters, each ending in CRLF (empty for no data)."""
    step = _BASE64_LINE
    return "\r\n".join([*(value[i : i + step] for i in range(0, len(value), step)), ""])
