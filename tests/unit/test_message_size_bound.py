"""``message_size_bound`` never under-estimates the built message, and over-estimates it by at
most its stated slack: checked on many random messages (seeded, so a failure reproduces)."""

from __future__ import annotations

import base64
import random
import re
import string
from email.utils import formataddr
from typing import Any

import pytest

from mailbox_worker.jobs import mime
from mailbox_worker.jobs.mime import (
    ADDRESS_FIELDS,
    BOUND_SLACK_PER_PART,
    build_message,
    folded_address_lists,
    folding_steps,
    message_size_bound,
    message_size_ceiling,
)
from mailbox_worker.policy import domains
from mailbox_worker.policy.addresses import is_email_address
from mailbox_worker.policy.slow_steps import SLOW_STEPS_ON_THE_LOOP

from .test_mime_equivalence import random_payload as equivalence_payload

SEEDS = range(200)
ALPHABETS = [
    string.ascii_letters + string.digits + " .,-",
    string.printable,  # with tabs, CR and LF
    "aé€😀 \n",  # non-ASCII: quoted-printable, base64 or 8bit bodies, encoded words
]


def text(rng: random.Random, longest: int) -> str:
    alphabet = rng.choice(ALPHABETS)
    value = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, longest)))
    if rng.random() < 0.2:  # lines over 998 characters force an encoding
        value += "x" * rng.randint(990, 3000)
    return value


def single_line(value: str) -> str:
    """``value`` as a header may carry it (the API's ``SingleLine`` refuses line breaks)."""
    return " ".join(value.split())


def address(rng: random.Random) -> dict[str, str]:
    local = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(1, 20)))
    item = {"address": f"{local}@{rng.choice(['fabrikam.example', 'bücher.example'])}"}
    if rng.random() < 0.5:
        item["name"] = single_line(text(rng, 40)) or "n"
    return item


def random_payload(rng: random.Random) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "to": [address(rng) for _ in range(rng.randint(1, 5))],
        "subject": single_line(text(rng, 120)),
    }
    for field in ("cc", "bcc", "reply_to"):
        if rng.random() < 0.3:
            payload[field] = [address(rng) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.8:
        payload["text"] = text(rng, 2000)
    if "text" not in payload or rng.random() < 0.4:
        payload["html"] = "<p>" + text(rng, 2000) + "</p>"
    payload["attachments"] = [
        {
            "filename": rng.choice(["INV-1.pdf", "facture été.pdf", "x" * 150 + ".pdf"]),
            "content_type": rng.choice(["application/pdf", "text/csv", "image/png"]),
            "content_base64": base64.b64encode(rng.randbytes(rng.randint(0, 20_000))).decode(),
        }
        for _ in range(rng.choice([0, 1, 1, 2, 5]))
    ]
    return payload


def built_and_bound(payload: dict[str, Any]) -> tuple[bytes, int]:
    """The message built from ``payload`` and ``message_size_bound`` of it, with the same
    Message-ID and sender."""
    sizes = [len(base64.b64decode(item["content_base64"])) for item in payload["attachments"]]
    built = build_message(payload, message_id="<job_1@contoso.example>", sender="b@contoso.example")
    bound = message_size_bound(
        payload,
        message_id="<job_1@contoso.example>",
        sender="b@contoso.example",
        decoded_sizes=sizes,
    )
    return built, bound


@pytest.mark.parametrize("seed", SEEDS)
def test_the_bound_is_never_below_the_built_message_and_close_above(seed: int) -> None:
    rng = random.Random(seed)
    payload = random_payload(rng)
    built, bound = built_and_bound(payload)
    parts = 1 + len(payload["attachments"]) + (2 if "html" in payload else 0)
    assert len(built) <= bound <= len(built) + BOUND_SLACK_PER_PART * parts


def test_a_message_that_cannot_be_built_fails_the_bound_too() -> None:
    payload = {"to": [{"address": "ap@fabrikam.example"}], "subject": "no body"}
    with pytest.raises(ValueError, match="text or an HTML body"):
        message_size_bound(
            payload, message_id="<j@c.example>", sender="b@c.example", decoded_sizes=[]
        )


@pytest.mark.parametrize("seed", range(300))
def test_the_bound_is_the_exact_size(seed: int) -> None:
    """The builder's boundaries have a fixed length and its base64 lines a fixed width, so
    the bound is the size itself: checked on the equivalence test's payloads (IDN domains,
    encoded names and subjects, folded lists, quoted-printable bodies, RFC 2231 names)."""
    built, bound = built_and_bound(equivalence_payload(random.Random(seed)))
    assert bound == len(built)


def ceiling_of(payload: dict[str, Any]) -> int | None:
    sizes = [len(base64.b64decode(item["content_base64"])) for item in payload["attachments"]]
    return message_size_ceiling(
        payload,
        message_id="<job_1@contoso.example>",
        sender="b@contoso.example",
        decoded_sizes=sizes,
    )


@pytest.mark.parametrize("seed", range(400))
def test_the_quick_ceiling_is_never_below_the_exact_bound(seed: int) -> None:
    """``message_size_ceiling``, which lets the intake skip the exact bound, never says less
    than it: on both generators' payloads (long and non-ASCII text forcing quoted-printable
    or base64, encoded names and subjects, IDN domains, RFC 2231 file names, 40 recipients)."""
    rng = random.Random(seed)
    for payload in (random_payload(rng), equivalence_payload(rng)):
        built, bound = built_and_bound(payload)
        ceiling = ceiling_of(payload)
        if ceiling is not None:
            assert ceiling >= bound == len(built)


def test_the_ceiling_is_near_the_size_of_an_invoice() -> None:
    """Close enough to be useful: a 100 KB PDF invoice's ceiling is within 5 % of its size."""
    payload: dict[str, Any] = {
        "to": [{"address": "ap@fabrikam.example", "name": "Fabrikam Accounts"}],
        "subject": "Invoice INV-2024-0042",
        "text": "Please find attached invoice INV-2024-0042.",
        "attachments": [
            {
                "filename": "INV-2024-0042.pdf",
                "content_type": "application/pdf",
                "content_base64": base64.b64encode(b"%PDF" + b"x" * 100_000).decode(),
            }
        ],
    }
    built, _ = built_and_bound(payload)
    ceiling = ceiling_of(payload)
    assert ceiling is not None and len(built) <= ceiling <= len(built) * 1.05


@pytest.mark.parametrize(
    "change",
    [
        {"text": None, "html": None},  # no body
        {"subject": "two\r\nlines"},
        {"to": [{"address": "ap@fabrikam.example", "name": "two\nlines"}]},
        {"to": [{"address": '"quoted local"@fabrikam.example'}]},
        {"to": [{"address": "ap@" + "ü" * 70 + ".example"}]},  # a label too long for IDNA
    ],
)
def test_the_ceiling_leaves_to_the_exact_bound_what_only_building_checks(
    change: dict[str, Any],
) -> None:
    payload: dict[str, Any] = {
        "to": [{"address": "ap@fabrikam.example"}],
        "subject": "Invoice",
        "text": "Attached.",
        "attachments": [],
        **change,
    }
    assert ceiling_of(payload) is None


def test_the_ceiling_counts_addresses_as_written_not_as_given() -> None:
    """An IDNA domain can be far longer than its UTF-8 (NFKC first: "㍿", 3 bytes, is
    "xn--6oqv20b1zgzxr"): 500 such recipients once put the ceiling 137 KB below the message.
    Here the longest such address the API takes (13 labels: 53 bytes of UTF-8, 235 octets in
    the message; tests/unit/test_addresses.py)."""
    long_domain = "a@" + ".".join(["㍿"] * 13)
    assert is_email_address(long_domain)
    payload: dict[str, Any] = {
        "to": [{"address": long_domain}] * 500,
        "cc": [{"address": long_domain, "name": "Ünïcode Name"}] * 50,
        "subject": "Invoice",
        "text": "Attached.",
        "attachments": [],
    }
    built, bound = built_and_bound(payload)
    ceiling = ceiling_of(payload)
    assert ceiling is not None and ceiling >= bound == len(built)


def unbounded(message: bytes) -> bytes:
    """``message`` with its random part boundaries (``=_`` and 32 hex digits) made equal."""
    return re.sub(rb"=_[0-9a-f]{32}", b"=_boundary", message)


def with_long_names(rng: random.Random, payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with some names long enough, outside ASCII, that a mailbox may not fit on
    a line (200 emoji: over 1,000 characters as one encoded word), or nearly."""
    for field in ADDRESS_FIELDS:
        for item in payload.get(field) or ():
            if rng.random() < 0.15:
                item["name"] = rng.choice(["📧", "請", "é", "a"]) * rng.choice([150, 180, 200])
    return payload


def payloads(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    return with_long_names(rng, equivalence_payload(rng)) if seed % 2 else random_payload(rng)


def header_values(message: bytes) -> list[tuple[str, str]]:
    """The message's top-level headers, as written (folds kept)."""
    head = message.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return [
        (name, value)
        for name, _, value in (field.partition(": ") for field in re.split(r"\r\n(?! )", head))
    ]


@pytest.mark.parametrize("seed", range(120))
def test_lists_folded_beforehand_are_what_the_message_carries(seed: int) -> None:
    """The intake folds a costly request's lists beside the loop and hands them to the size
    checks (``folded``): they are the To, Cc, Bcc and Reply-To headers of the built message,
    in its order, and the bound and ceiling given them are the same as without."""
    payload = payloads(seed)
    sizes = [len(base64.b64decode(item["content_base64"])) for item in payload["attachments"]]
    who: dict[str, Any] = {"message_id": "<job_1@contoso.example>", "sender": "b@contoso.example"}
    folded = folded_address_lists(payload)
    built = build_message(payload, **who)

    lists = {"To", "Cc", "Bcc", "Reply-To"}
    assert [(name, value) for name, value in header_values(built) if name in lists] == list(
        folded.items()
    )
    bound = message_size_bound(payload, **who, decoded_sizes=sizes, folded=folded)
    assert bound == message_size_bound(payload, **who, decoded_sizes=sizes) == len(built)
    ceiling = message_size_ceiling(payload, **who, decoded_sizes=sizes, folded=folded)
    assert ceiling is None or ceiling >= bound


@pytest.mark.parametrize("seed", range(150))
def test_folding_steps_count_every_list_the_email_package_folds(seed: int) -> None:
    """Each address of a list the builder hands to the email package counts a step, and an
    address too long for a line more than the loop's whole budget: whatever the builder
    folds that way (seen by a spy on ``_modern_fold``) is counted, over the budget when a
    mailbox passed the line."""
    payload = payloads(seed)
    folded_by_email: list[str] = []
    fold = mime._modern_fold

    def spy(name: str, value: Any) -> str:
        folded_by_email.append(name)
        return fold(name, value)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mime, "_modern_fold", spy)
        folded_address_lists(payload)
    headers = dict(zip(("To", "Cc", "Bcc", "Reply-To"), ADDRESS_FIELDS, strict=True))
    slow = [payload[headers[name]] for name in folded_by_email]
    too_long = any(
        len(one_word(item)) > mime.MAX_LINE - len(name) - 3
        for name in folded_by_email
        for item in payload[headers[name]]
    )

    steps = folding_steps(payload)
    assert steps >= sum(map(len, slow))
    if too_long:
        assert steps > SLOW_STEPS_ON_THE_LOOP
    if not folded_by_email:
        assert steps == 0 or any(  # counted only for a name that may pass the line
            len(str(item.get("name", "")).encode()) > 400
            for field in ADDRESS_FIELDS
            for item in payload.get(field) or ()
        )


def one_word(item: dict[str, Any]) -> str:
    """The item as one mailbox whose name is one encoded word, whatever its local part: what
    the email package must split when it passes the line."""
    local, _, domain = item["address"].rpartition("@")
    address = f"{local}@{domains.ascii_domain(domain)}"
    name = item.get("name") or ""
    return formataddr((name, address), "utf-8") if name else address


def test_folding_steps_by_example() -> None:
    plain = {"address": "ap@fabrikam.example"}
    payload = {
        "to": [plain, {"address": "ap@bücher.example"}],  # an IDN domain: written as it is
        "cc": [plain, {"address": '"a b"@fabrikam.example'}, plain],
        "bcc": [{"address": "rené@fabrikam.example"}],
        "reply_to": [{"address": "ap@[192.0.2.1]"}],
    }
    assert folding_steps(payload) == 3 + 1 + 1
    assert not mime.builds_quickly({"to": [plain] * 40 + [{"address": "a=?b@fabrikam.example"}]})
    assert folding_steps({"to": [plain, {"address": "a=?b@fabrikam.example"}]}) == 2
    long_name = {**plain, "name": "📧" * 200}
    assert folding_steps({"to": [long_name]}) > SLOW_STEPS_ON_THE_LOOP
    assert not mime.builds_quickly({"to": [long_name]})
    assert folding_steps({"to": [{**plain, "name": "請" * 200}]}) == 0  # 814 characters: fits
    quoted_long = {"address": '"a b"@fabrikam.example', "name": "📧" * 200}
    assert folding_steps({"to": [quoted_long]}) > SLOW_STEPS_ON_THE_LOOP
    idn_long = {"address": "a@bücher.example", "name": "📧" * 200}
    assert not mime.builds_quickly({"to": [idn_long]})
    sender_long = {"address": "b@contoso.example", "name": "📧" * 200}
    assert not mime.builds_quickly({"to": [plain], "from": sender_long})
    assert mime.builds_quickly({"to": [plain], "from": {"address": "b@contoso.example"}})
