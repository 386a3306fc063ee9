from __future__ import annotations

import base64
import datetime as dt
import email
from email import policy

import pytest

from mailbox_worker.jobs.mime import build_message, builds_quickly, recipients
from mailbox_worker.policy.slow_steps import SLOW_STEPS_ON_THE_LOOP

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 4


def payload(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "from": {"address": "billing@contoso.example", "name": "Contoso Billing"},
        "to": [{"address": "ap@fabrikam.example", "name": "Fabrikam, AP"}],
        "cc": [{"address": "cfo@fabrikam.example"}],
        "bcc": [{"address": "archive@contoso.example"}],
        "reply_to": [{"address": "help@contoso.example"}],
        "subject": "Invoice INV-1 — €120",
        "text": "Please find the invoice attached.",
        "html": "<p>Please find the invoice attached.</p>",
        "attachments": [
            {
                "filename": "INV-1.pdf",
                "content_type": "application/pdf",
                "content_base64": base64.b64encode(PDF).decode(),
            }
        ],
    }
    base.update(overrides)
    return base


def parse(raw: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def test_message_carries_headers_bodies_and_the_exact_pdf() -> None:
    raw = build_message(
        payload(), message_id="<job_1@contoso.example>", sender="billing@contoso.example"
    )
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    message = parse(raw)
    assert message["Message-ID"] == "<job_1@contoso.example>"
    assert message["From"] == "Contoso Billing <billing@contoso.example>"
    assert message["To"] == '"Fabrikam, AP" <ap@fabrikam.example>'
    assert message["Bcc"] == "archive@contoso.example"
    assert message["Subject"] == "Invoice INV-1 — €120"
    body = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert body is not None and "attached" in body.get_content()
    assert html is not None and "<p>" in html.get_content()
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "INV-1.pdf"
    assert attachment.get_content() == PDF


def test_same_job_same_message_id_whatever_the_date() -> None:
    first = build_message(
        payload(),
        message_id="<j@x>",
        sender="billing@contoso.example",
        date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    second = build_message(
        payload(),
        message_id="<j@x>",
        sender="billing@contoso.example",
        date=dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
    )
    assert parse(first)["Message-ID"] == parse(second)["Message-ID"]


def test_html_only_and_text_only() -> None:
    html_only = parse(
        build_message(payload(text=None, attachments=[]), message_id="<a@b>", sender="b@c.d")
    )
    assert html_only.get_content_type() == "text/html"
    text_only = parse(
        build_message(payload(html=None, attachments=[]), message_id="<a@b>", sender="b@c.d")
    )
    assert text_only.get_content_type() == "text/plain"


def test_a_body_is_required() -> None:
    with pytest.raises(ValueError, match="body"):
        build_message(payload(text=None, html=None), message_id="<a@b>", sender="b@c.d")


def test_bad_base64_is_refused() -> None:
    bad = [{"filename": "a.pdf", "content_type": "application/pdf", "content_base64": "***"}]
    with pytest.raises(ValueError, match=r"base64|Incorrect|Invalid"):
        build_message(payload(attachments=bad), message_id="<a@b>", sender="b@c.d")


def test_header_injection_is_impossible() -> None:
    with pytest.raises(ValueError, match=r"linefeed|carriage"):
        build_message(
            payload(subject="x\r\nBcc: evil@example.com"), message_id="<a@b>", sender="b@c.d"
        )


def test_recipients_cover_to_cc_bcc() -> None:
    assert recipients(payload()) == [
        "ap@fabrikam.example",
        "cfo@fabrikam.example",
        "archive@contoso.example",
    ]


def test_an_internationalised_domain_goes_out_in_its_ascii_form() -> None:
    raw = build_message(
        payload(to=[{"address": "ap@bücher.example", "name": "Jörg Müller"}]),
        message_id="<job_1@contoso.example>",
        sender="billing@contoso.example",
    )
    assert b"xn--bcher-kva.example" in raw
    assert b"=?utf-8?q?b" not in raw.lower()
    assert parse(raw)["To"].addresses[0].addr_spec == "ap@xn--bcher-kva.example"


@pytest.mark.parametrize(
    "change",
    [
        {"to": [{"address": "ap@fabrikam.example", "name": "AP\r\nBcc: evil@example.com"}]},
        {"from": {"address": "billing@contoso.example", "name": "Billing\nX-Evil: 1"}},
        {
            "attachments": [
                {
                    "filename": "a.pdf\r\nX-Evil: 1",
                    "content_type": "application/pdf",
                    "content_base64": "",
                }
            ]
        },
    ],
    ids=["name", "sender name", "filename"],
)
def test_no_header_takes_a_line_break(change: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"linefeed|carriage|CR or LF"):
        build_message(payload(**change), message_id="<a@b>", sender="b@c.d")


def test_a_non_ascii_display_name_is_one_encoded_word() -> None:
    """Parsers differ on the space between two encoded words in a display name (RFC 2047
    drops it, Python's email package keeps it): one word, however long, reads the same in
    both."""
    name = "Zoë Ñúñez-Łukasz, Comptabilité fournisseurs " * 4
    raw = build_message(
        payload(to=[{"address": "ap@fabrikam.example", "name": name}]),
        message_id="<a@b>",
        sender="b@c.d",
    )
    [to_line] = [line for line in raw.split(b"\r\n") if line.startswith(b"To: ")]
    assert to_line.count(b"=?utf-8?") == 1 and len(to_line) <= 998
    assert parse(raw)["To"].addresses[0].display_name == name.strip()


def test_lines_end_in_crlf_and_stay_within_998_characters() -> None:
    many = [{"address": f"ap{n}@fabrikam.example", "name": f"Accounts {n}"} for n in range(300)]
    raw = build_message(
        payload(to=many, subject="é" * 998, text="x" * 5000),
        message_id="<a@b>",
        sender="b@c.d",
    )
    lines = raw.split(b"\r\n")
    assert lines[-1] == b"" and max(map(len, lines)) <= 998
    assert len(parse(raw)["To"].addresses) == 300
    assert parse(raw)["Subject"] == "é" * 998


def test_a_message_builds_quickly_with_few_addresses_in_lists_not_written_as_they_are() -> None:
    """Every list counts (To, Cc, Bcc, Reply-To), and every address of a list that has one
    the builder cannot write as it is (an internationalised domain, a quoted local part, an
    encoded word, a domain literal); lists of plain ASCII addresses do not count, nor does the
    sender, the mailbox's own address."""
    few = {
        "to": [{"address": f"a@{n}.bücher.example"} for n in range(SLOW_STEPS_ON_THE_LOOP - 3)],
        "cc": [{"address": "b@bücher.example"}],
        "bcc": [{"address": '"c d"@example.com'}, {"address": "c@example.com"}],
        "reply_to": [{"address": f"d{n}@example.com"} for n in range(500)],
        "from": {"address": "billing@bücher.example"},
    }
    assert builds_quickly(few)
    for irregular in ("e@bücher.example", '"e f"@example.com', "=?e@example.com", "e@[1.2.3.4]"):
        more = {**few, "cc": [*few["cc"], {"address": irregular}]}
        assert not builds_quickly(more)
    assert not builds_quickly({**few, "reply_to": [*few["reply_to"], {"address": "x@bücher.de"}]})
