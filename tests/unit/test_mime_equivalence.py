"""The cheap MIME builder sends what the previous one sent: over a few hundred seeded random
payloads, both messages parse (``policy.default``) to the same header values, the same part
tree and the same decoded bodies and attachment bytes. The previous builder is kept, for this
comparison only, in ``mime_reference.py``. A failure names its seed, which reproduces it."""

from __future__ import annotations

import base64
import datetime as dt
import email
import random
import string
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest

from mailbox_worker.jobs.mime import build_message, decode_attachment
from mailbox_worker.policy.domains import ascii_domain

from . import mime_reference

SEEDS = range(400)
DATE = dt.datetime(2026, 12, 6, 2, 30, tzinfo=dt.UTC)
MESSAGE_ID = "<job_0123456789abcdef0123456789abcdef@contoso.example>"
SENDER = "billing@contoso.example"
ADDRESS_HEADERS = ("From", "To", "Cc", "Bcc", "Reply-To")

NAMES = [
    "Contoso Billing",
    "Fabrikam, AP",  # a comma: quoted
    'Jean "JJ" Dupont',  # quotes: escaped
    "O'Brien (Accounts)",
    "Dr. A. B. Smith",
    "back\\slash",
    "Jörg Müller",
    "Zoë Ñúñez-Łukasz",
    "山田 太郎",
    "Invoices 📄",
    "ÉÉÉ " * 40,  # long: several encoded words, folded
    "plain " * 30,  # long ASCII
    "Price =? tbd",  # looks like the start of an encoded word
]
DOMAINS = ["fabrikam.example", "bücher.example", "münchen.example", "xn--caf-dma.example", "b.c"]
SUBJECTS = [
    "Invoice INV-1",
    "Invoice INV-1 — €120",
    "Facture n° 2026-0042 : échéance le 31/12",
    "請求書 2026年12月",
    "Re: [billing] (urgent) ; a=b, c?d",
    "= ? =?not an encoded word?=",
]
FILENAMES = [
    "INV-1.pdf",
    "facture été.pdf",
    'quote"and\\backslash.txt',
    "x" * 150 + ".pdf",
    "é" * 200 + ".pdf",  # RFC 2231 continuations
    "請求書.pdf",
    "report (final) v2.csv",
]
CONTENT_TYPES = ["application/pdf", "text/csv", "image/png", "application/octet-stream"]
BODY_ALPHABETS = [
    string.ascii_letters + string.digits + " .,-",
    string.printable,  # with tabs, CR and LF
    "aé€😀 \n",
    "From x\n.\n \t\r\n",  # mbox "From " lines, dots, trailing blanks, bare CR
]


def address(rng: random.Random) -> dict[str, str]:
    atext = string.ascii_lowercase + string.digits + "+-_'"
    local = "".join(rng.choice(atext) for _ in range(rng.randint(1, 20)))
    if rng.random() < 0.2:
        local += "." + "".join(rng.choice(string.ascii_lowercase) for _ in range(5))
    item = {"address": f"{local}@{rng.choice(DOMAINS)}"}
    if rng.random() < 0.6:
        item["name"] = rng.choice(NAMES)
    return item


def subject(rng: random.Random) -> str:
    choice = rng.random()
    if choice < 0.5:
        return rng.choice(SUBJECTS)
    if choice < 0.7:  # long, with spaces, ASCII or not
        words = [rng.choice(["invoice", "été", "2026", "Rechnung", "€"]) for _ in range(200)]
        return " ".join(words)[: rng.randint(80, 998)].strip() or "x"
    if choice < 0.8:  # long without a space to fold at
        return "x" * rng.randint(950, 998)
    alphabet = rng.choice(BODY_ALPHABETS[:3])
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 120)))
    return " ".join(text.split()) or "x"


def body(rng: random.Random) -> str:
    alphabet = rng.choice(BODY_ALPHABETS)
    value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 3000)))
    if rng.random() < 0.2:  # a line over 998 bytes: quoted-printable or base64
        value += rng.choice(["x", "é", "a b"]) * rng.randint(400, 1500)
    return value


def attachment(rng: random.Random) -> dict[str, str]:
    size = rng.choice([0, 1, 2, 3, 746, 747, 748, rng.randint(0, 30_000)])
    return {
        "filename": rng.choice(FILENAMES),
        "content_type": rng.choice(CONTENT_TYPES),
        "content_base64": base64.b64encode(rng.randbytes(size)).decode(),
    }


def random_payload(rng: random.Random) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "to": [address(rng) for _ in range(rng.choice([1, 1, 2, 3, 40]))],
        "subject": subject(rng),
    }
    if rng.random() < 0.5:
        payload["from"] = {"address": SENDER, "name": rng.choice(NAMES)}
    for field in ("cc", "bcc", "reply_to"):
        if rng.random() < 0.4:
            payload[field] = [address(rng) for _ in range(rng.randint(1, 12))]
    kind = rng.choice(["text", "html", "both"])
    if kind in ("text", "both"):
        payload["text"] = body(rng)
    if kind in ("html", "both"):
        payload["html"] = "<p>" + body(rng) + "</p>"
    payload["attachments"] = [attachment(rng) for _ in range(rng.randint(0, 3))]
    return payload


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def tree(part: EmailMessage) -> dict[str, Any]:
    """What a part says once parsed: its type, parameters, disposition and decoded content."""
    node: dict[str, Any] = {
        "type": part.get_content_type(),
        "charset": part.get_content_charset(),
        "disposition": part.get_content_disposition(),
        "filename": part.get_filename(),
    }
    if part.is_multipart():
        node["parts"] = [tree(child) for child in part.iter_parts()]  # type: ignore[arg-type]
    elif part.get_content_disposition() == "attachment":
        node["bytes"] = part.get_payload(decode=True)
    else:
        node["text"] = part.get_content()
    return node


def summary(raw: bytes) -> dict[str, Any]:
    message = parse(raw)
    headers: dict[str, Any] = {}
    for name in message:
        if name in ADDRESS_HEADERS:
            addresses = message[name].addresses
            headers[name] = [(each.display_name, each.addr_spec) for each in addresses]
        elif not name.startswith("Content-"):
            headers[name] = str(message[name])
    return {"headers": headers, "tree": tree(message)}


def defects(raw: bytes) -> list[Any]:
    return [defect for part in parse(raw).walk() for defect in part.defects]


def intended(payload: dict[str, Any]) -> dict[str, Any]:
    """The header values the payload asks for, as a parser reads them back: names without
    their surrounding spaces, domains in their ASCII form."""
    values: dict[str, Any] = {
        "Subject": payload["subject"],
        "Date": "Sun, 06 Dec 2026 02:30:00 +0000",
        "Message-ID": MESSAGE_ID,
        "From": [((payload.get("from") or {}).get("name", "").strip(), SENDER)],
    }
    for field, header in (("to", "To"), ("cc", "Cc"), ("bcc", "Bcc"), ("reply_to", "Reply-To")):
        if payload.get(field):
            values[header] = [
                (item.get("name", "").strip(), mailbox(item["address"])) for item in payload[field]
            ]
    return values


def mailbox(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return f"{local}@{ascii_domain(domain)}"


@pytest.mark.parametrize("seed", SEEDS)
def test_the_new_message_parses_to_what_the_old_one_did(seed: int) -> None:
    """Same part tree, bodies and attachments; same header values, except where the previous
    builder's values were not the payload's (the modern folder of Python 3.11 sometimes wrote
    the comma between two addresses as an encoded word, losing an address, dropped a space
    where it folded a long subject, or put one before a subject it could not fold): there the
    new one must carry the payload's exact value."""
    payload = random_payload(random.Random(seed))
    old = mime_reference.build_message(payload, message_id=MESSAGE_ID, sender=SENDER, date=DATE)
    new = build_message(payload, message_id=MESSAGE_ID, sender=SENDER, date=DATE)
    before, after, asked = summary(old), summary(new), intended(payload)
    assert after["tree"] == before["tree"]
    assert list(after["headers"]) == list(before["headers"])
    for name, value in after["headers"].items():
        assert value == asked.get(name, before["headers"][name]), name
        if value != before["headers"][name]:
            assert before["headers"][name] != asked[name], name
    assert defects(new) == []
    lines = new.split(b"\r\n")
    assert lines[-1] == b""  # every line ends in CRLF, and nothing follows the last
    assert all(b"\r" not in line and b"\n" not in line for line in lines)
    assert max(map(len, lines)) <= 998


@pytest.mark.parametrize(
    "local", ['"john doe"', "jörg", "a..b", "=?utf-8?q?x?="], ids=["quoted", "utf8", "dots", "ew"]
)
def test_an_irregular_local_part_is_written_as_before(local: str) -> None:
    """The modern policy writes it, as it did: same bytes for that header."""
    payload = {
        "to": [{"address": f"{local}@bücher.example", "name": "Jörg"}],
        "subject": "s",
        "text": "t",
    }
    old = mime_reference.build_message(payload, message_id=MESSAGE_ID, sender=SENDER, date=DATE)
    new = build_message(payload, message_id=MESSAGE_ID, sender=SENDER, date=DATE)
    assert parse(new)["To"] == parse(old)["To"]
    assert summary(new) == summary(old)


BASE64_ALPHABETS = ["QUJD=", "AQB+/=\n x=é", "AB=", "A=", "Zm9v", "Zg=-_"]


@pytest.mark.parametrize("alphabet", BASE64_ALPHABETS)
def test_attachments_are_accepted_and_refused_as_b64decode_validate_does(alphabet: str) -> None:
    """The builder checks the base64 without decoding it: it refuses what the previous
    builder refused, and what it sends decodes to the same bytes."""
    rng = random.Random(alphabet)
    for _ in range(4_000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 13)))
        payload = {
            "to": [{"address": "ap@fabrikam.example"}],
            "subject": "s",
            "text": "t",
            "attachments": [
                {"filename": "a.bin", "content_type": "application/pdf", "content_base64": value}
            ],
        }
        try:
            expected: bytes | None = base64.b64decode(value, validate=True)
        except ValueError:
            expected = None
        try:
            decoded: bytes | None = decode_attachment(value)
        except ValueError:
            decoded = None
        try:
            raw = build_message(payload, message_id=MESSAGE_ID, sender=SENDER, date=DATE)
        except ValueError:
            sent: bytes | None = None
        else:
            [part] = list(parse(raw).iter_attachments())
            content = part.get_payload(decode=True)
            assert isinstance(content, bytes)
            sent = content
        assert decoded == expected, value
        assert sent == expected, value


@pytest.mark.parametrize("value", ["QUJD=", "QUJD====", "QUJDRA==", "QR==", "QUI="])
def test_irregular_but_decodable_base64_sends_the_same_bytes(value: str) -> None:
    """Extra padding after a complete group is dropped; the bytes are those b64decode gives."""
    payload = {
        "to": [{"address": "ap@fabrikam.example"}],
        "subject": "s",
        "text": "t",
        "attachments": [
            {"filename": "a.bin", "content_type": "application/pdf", "content_base64": value}
        ],
    }
    old = mime_reference.build_message(payload, message_id=MESSAGE_ID, sender=SENDER, date=DATE)
    new = build_message(payload, message_id=MESSAGE_ID, sender=SENDER, date=DATE)
    assert summary(new) == summary(old)
    [part] = list(parse(new).iter_attachments())
    assert part.get_payload(decode=True) == base64.b64decode(value, validate=True)
    assert defects(new) == []
