"""The address an identity provider reports for a mailbox: validated, and kept in one form; the
quick check of the common form agrees with the parser."""

from __future__ import annotations

import random
import string
import traceback

import idna
import pytest
import yarl

from mailbox_worker.policy import addresses, domains
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


@pytest.mark.parametrize(
    ("value", "octets"),
    [
        ("a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 61, 254),
        ("a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 62, 255),
        # 27 and 31 characters; each "㍿" is "xn--6oqv20b1zgzxr" in the message.
        ("a@" + ".".join(["㍿"] * 13), 235),
        ("a@" + ".".join(["㍿"] * 15), 271),
        # ß counts as IDNA 2008 spells it: "straße" is "xn--strae-oqa" (IDNA 2003: "strasse",
        # 164 octets for the second).
        ("a@" + ".".join(["straße"] * 15) + "." + "y" * 42, 254),
        ("a@" + ".".join(["straße"] * 15) + "." + "y" * 43, 255),
        # A quoted local part counts with its quotes.
        ('"a b"' + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 56, 254),
        ('"a b"' + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 57, 255),
    ],
)
def test_an_address_is_at_most_254_octets_as_the_message_carries_it(
    value: str, octets: int
) -> None:
    """RFC 5321 (4.5.3.1.3) limits a path to 256 octets with its angle brackets; a longer
    address passed the API before and could only fail at the provider. The domain counts in its
    ASCII (IDNA) form, which may be far longer than it was written."""
    assert len(value) <= 320  # the API document's maxLength lets each of them through
    assert is_email_address(value) is (octets <= addresses.MAX_ADDRESS_OCTETS)
    assert addresses._parses_back(value) is (octets <= addresses.MAX_ADDRESS_OCTETS)
    local, _, domain = value.partition("@")
    # Label by label: the encoder refuses a whole name over 253 octets.
    spelled = ".".join(domains.ascii_domain(label) for label in domain.split("."))
    assert len(local) + 1 + len(spelled) == octets


def test_answers_are_remembered_for_addresses_of_the_documents_length_only() -> None:
    """A domain seen again is not encoded again, an address not parsed again; a string
    longer than the document's ``maxLength`` is refused before either, and never kept (JSON
    Schema checks its format too, and a request may be 16 MB)."""
    addresses._parses_back.cache_clear()
    domains._spelling.cache_clear()
    for _ in range(3):
        assert is_email_address("rechnung@bücher.example")
        assert mailbox_address("Rechnung@Bücher.example") == "Rechnung@xn--bcher-kva.example"
    assert addresses._parses_back.cache_info().misses == 2  # the two spellings, once each
    assert domains._spelling.cache_info().misses == 2  # bücher.example, Bücher.example
    for length in (321, 100_000):
        assert not is_email_address("a@" + "㍿" * (length - 2))
    assert addresses._parses_back.cache_info().currsize == 2
    assert domains._spelling.cache_info().currsize == 2


@pytest.mark.parametrize("stop", ["\u3002", "\uff0e", "\uff61", "."])
def test_a_domain_is_refused_when_its_ascii_form_ends_in_an_empty_label(stop: str) -> None:
    """UTS #46 turns U+3002, U+FF0E and U+FF61 into dots: "b。" is "b." once spelled, which
    no message may carry (it reached the To header before)."""
    assert not is_email_address(f"a@b{stop}")
    assert not is_email_address(f"a@bücher{stop}")
    assert mailbox_address(f"a@b{stop}") is None
    assert is_email_address(f"a@bücher{stop}example")


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("info@straße.de", "info@xn--strae-oqa.de"),
        ("info@ελληνικός.gr", "info@xn--qxaegecap6byf.gr"),
        ("Info@Bücher.Example", "Info@xn--bcher-kva.example"),
        ("info@bücher。example", "info@xn--bcher-kva.example"),  # an ideographic full stop
    ],
)
def test_a_domain_is_spelled_as_mail_systems_and_browsers_spell_it(
    value: str, canonical: str
) -> None:
    """IDNA 2008 with UTS #46 (non-transitional), as yarl spells a URL's host. The standard
    library's IDNA 2003 sent straße.de to strasse.de, and ελληνικός.gr to another name: other
    domains, with other owners."""
    assert mailbox_address(value) == canonical
    domain = value.partition("@")[2]
    assert domains.ascii_domain(domain).lower() == yarl.URL(f"https://{domain}/").raw_host
    assert not same_address("info@straße.de", "info@strasse.de")


@pytest.mark.parametrize("value", ["info@☃.net", "info@فارسی\u200c.ir", "info@bü_cher.example"])
def test_a_domain_idna_2008_disallows_is_refused(value: str) -> None:
    """A symbol (IDNA 2003 took ☃), a joiner out of its context, an underscore in an
    internationalised label."""
    assert not is_email_address(value)
    assert mailbox_address(value) is None


@pytest.mark.parametrize(
    ("reported", "before"),
    [
        ("rechnung@straße.example", "rechnung@strasse.example"),
        ("info@ελληνικός.gr", "info@xn--qxaegecap4c9d.gr"),
        ("rechnung@bücher.example", None),  # spelled the same by both
        ("billing@contoso.example", None),  # ASCII: stored as it came
        ("info@☃.net", "info@xn--n3h.net"),  # IDNA 2008 has no spelling for it at all
    ],
)
def test_a_mailbox_address_as_idna_2003_spelled_it(reported: str, before: str | None) -> None:
    """What a mailbox connected before 2026-12-07 holds, where it differs from today's
    spelling (docs/identity.md, "Addresses spelled before IDNA 2008")."""
    assert addresses.spelled_by_idna_2003(reported) == before


@pytest.mark.parametrize(
    ("longest", "too_long"),
    [("b" * 63, "b" * 64), ("bücher" + "b" * 50, "bücher" + "b" * 51)],  # 63 and 64 octets
)
def test_a_label_over_63_octets_is_refused_ascii_or_not(longest: str, too_long: str) -> None:
    """RFC 1035 bounds a DNS label at 63 octets. The IDNA encoder checks an internationalised
    label; an ASCII one was not checked at all."""
    assert is_email_address(f"a@{longest}.example")
    assert not is_email_address(f"a@{too_long}.example")
    assert mailbox_address(f"a@{too_long}.example") is None


def test_a_domain_without_an_ascii_form_is_encoded_once() -> None:
    """One invalid domain under thousands of local parts in a batch is encoded once, 0.3 to
    1 ms, not once per address: failures are remembered as spellings are."""
    domains._spelling.cache_clear()
    kinds = set()
    for _ in range(3):
        with pytest.raises(UnicodeError) as raised:
            domains.ascii_domain("☃.net")
        kinds.add(type(raised.value))
        assert raised.value.__traceback__ is not None
        assert len(list(traceback.walk_tb(raised.value.__traceback__))) < 5  # a fresh one
        assert not is_email_address("rechnung@☃.net")
    assert domains._spelling.cache_info().misses == 1
    assert kinds == {idna.InvalidCodepoint}  # as the encoder raised it: job errors name it


def test_names_longer_than_any_domain_are_never_remembered() -> None:
    """A return origin's host is spelled before its length is checked, and a failure's
    message quotes its label: such strings are encoded each time, never kept."""
    domains._spelling.cache_clear()
    longest, too_long = "ü" * domains.CACHED_LENGTH, "ü" * (domains.CACHED_LENGTH + 1)
    for name in (longest, too_long, "☃" * 80_000):
        with pytest.raises(UnicodeError):
            domains.ascii_domain(name)
    assert domains._spelling.cache_info().currsize == 1  # the longest that can be a domain


def test_spellings_kept_answer_within_and_are_left_alone_outside() -> None:
    """``spellings_kept`` holds what was spelled within it, whatever the cache keeps, and
    answers from it; outside it nothing is added."""
    kept: dict[str, str] = {}
    with domains.spellings_kept(kept):
        assert domains.ascii_domain("bücher.example") == "xn--bcher-kva.example"
        assert domains.ascii_domain("example.com") == "example.com"  # ASCII: as it is
        kept["straße.de"] = "remembered.example"
        assert domains.ascii_domain("straße.de") == "remembered.example"
        with pytest.raises(UnicodeError):
            domains.ascii_domain("☃.net")
    assert kept == {"bücher.example": "xn--bcher-kva.example", "straße.de": "remembered.example"}
    assert domains.ascii_domain("straße.de") == "xn--strae-oqa.de"
    assert domains.ascii_domain("ελληνικός.gr").startswith("xn--")
    assert "ελληνικός.gr" not in kept
