"""The address an identity provider reports for a mailbox: validated, and kept in one form; the
quick check of the common form agrees with the parser."""

from __future__ import annotations

import random
import string

import pytest

from mailbox_worker.policy import addresses
from mailbox_worker.policy.addresses import is_email_address, mailbox_address, same_address


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("billing@contoso.example", "billing@contoso.example"),
        ("First.Last+tag@Sub.Contoso.Example", "First.Last+tag@sub.contoso.example"),
        ("rechnung@bücher.example", "rechnung@xn--bcher-kva.example"),
        ("rechnung@XN--BCHER-KVA.example", "rechnung@xn--bcher-kva.example"),
        ("o'brien&co@contoso.example", "o'brien&co@contoso.example"),
    ],
)
def test_a_plain_address_is_kept_with_its_domain_in_ascii_lower_case(
    value: str, canonical: str
) -> None:
    assert mailbox_address(value) == canonical


@pytest.mark.parametrize(
    "value",
    [
        "<b>billing</b>@contoso.example",
        '"><script>alert(1)</script>@contoso.example',
        "billing@contoso.example<img src=x>",
        "billing@contoso.example\r\nBcc: victim@evil.example",
        "bill\x00ing@contoso.example",
        "bill\x1bing@contoso.example",
        "billing\u2028@contoso.example",
        '"<b>"@contoso.example',  # a quoted local part is an addr-spec, not a mailbox's
        '"a b"@contoso.example',
        "billing@[192.0.2.1]",
        "Billing <billing@contoso.example>",
        "billing@contoso..example",
        "billing",
        "+14255550100",
        "",
    ],
)
def test_anything_else_is_refused(value: str) -> None:
    assert mailbox_address(value) is None


def test_the_same_mailbox_compares_equal_in_either_domain_form_and_any_case() -> None:
    assert same_address("Rechnung@Bücher.example", "rechnung@xn--bcher-kva.example")
    assert same_address("BILLING@contoso.example", "billing@CONTOSO.example")
    assert not same_address("billing@contoso.example", "accounts@contoso.example")
    assert not same_address("billing@contoso.example", "billing@contoso.example.evil")


def test_the_quick_form_is_one_the_parser_accepts() -> None:
    """``is_email_address`` accepts the common form (a dot-atom local part, an ASCII domain)
    by a regular expression, without the standard library's parser: on seeded random strings
    of that form and of near misses, whatever the expression accepts the parser accepts."""
    generator = random.Random("addresses")
    atext = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
    alphabet = atext + '.@-"() \\[]<>,;:é\n' + "=?" * 5

    def atom(characters: str) -> str:
        return "".join(generator.choice(characters) for _ in range(generator.randint(1, 6)))

    encoded = ["=?utf-8?q?a=40evil.example?=", "=?utf-8?b?YWJj?=", "=?us-ascii?q?x?=", "a=?b"]

    def part() -> str:
        return generator.choice(encoded) if generator.random() < 0.1 else atom(atext)

    candidates = [
        ".".join(part() for _ in range(generator.randint(1, 3)))
        + "@"
        + ".".join(atom(string.ascii_letters + string.digits + "-") for _ in range(1, 4))
        for _ in range(3000)
    ]
    candidates += [
        "".join(generator.choice(alphabet) for _ in range(generator.randint(3, 20)))
        for _ in range(20000)
    ]
    quick = 0
    for candidate in candidates:
        if addresses._plain(candidate):
            quick += 1
            assert addresses._parses_back(candidate), candidate
        assert is_email_address(candidate) == addresses._parses_back(candidate), candidate
    assert quick >= 2000  # most structured ones, and some of the random ones
    # An encoded word in the local part is the parser's to judge: it decodes it.
    assert not is_email_address("=?utf-8?q?a=40evil.example?=@fabrikam.example")
