"""Which strings are mail addresses, and one spelling of each: pure functions, no I/O.

One validator serves every address that reaches a mail header: the API document asserts its
``email`` format with ``is_email_address``, and the address an identity provider reports for a
mailbox must pass ``mailbox_address`` (the same check, narrowed to the plain form a mailbox
has: a dot-atom local part and a domain name, no quoted local part, no domain literal).

Internationalised domains are accepted and kept in their ASCII (IDNA 2008) form
(``policy/domains.py``), lower-cased, which is what mail headers carry; ``same_address``
compares two addresses in that form, the local part case-insensitively (as every provider we
speak to treats it). An address is at most ``MAX_ADDRESS_OCTETS`` long in that form.

The IDNA encoder and the standard library's address parser are pure Python: 36 to 250 µs for
one internationalised address, where an ASCII one takes 1 µs. Their answers for a string never
change, so the parser's are kept for the addresses seen most recently (``CACHED_STRINGS``), as
the encoder's are for domains: an invoicing app writes to the same customers again and again
(docs/performance.md, "The addresses' checks").
"""

from __future__ import annotations

import contextlib
import email.errors
import functools
import re
from email.headerregistry import Address

from mailbox_worker.policy import slow_steps
from mailbox_worker.policy.domains import ascii_domain

MAX_ADDRESS_OCTETS = 254
"""The longest address a mail server must take: RFC 5321 (4.5.3.1.3) limits a path to 256
octets, its angle brackets included. Counted as the message carries it, the domain in its
ASCII (IDNA) form (the local part is ASCII: the parser refuses any other). ``a@`` and a
hundred labels of "㍿" is 201 characters, and 1,801 octets in that form ("xn--6oqv20b1zgzxr"
a label)."""
MAX_LABEL_OCTETS = 63
"""The longest label of a domain name (RFC 1035, 2.3.4)."""
MAX_CHARACTERS = 320
"""The API document's ``maxLength`` for an address. A longer string is refused before any
other work: JSON Schema checks the format of a string that breaks its ``maxLength`` too, and
the cache must not keep strings of any length (a request may be 16 MB)."""
CACHED_STRINGS = 4096
"""How many addresses' answers the parser's cache keeps (each of at most ``MAX_CHARACTERS``)."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9-]{1,63}"
_PLAIN = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*", re.ASCII)
"""The common form: a dot-atom local part (RFC 5322 ``atext``) and an ASCII domain of labels
of 1 to 63 characters, which the standard library parses back to itself every time."""


def is_email_address(value: object) -> bool:
    """An ``addr_spec`` the standard library parses back to itself, safe in a header.

    Exactly one ``@``, no control characters (so no CR/LF) and no spaces outside a quoted
    local part, a domain of non-empty dot-separated labels. Non-strings pass (JSON Schema
    formats constrain strings only; ``type`` reports the rest).
    """
    if not isinstance(value, str):
        return True
    if len(value) > MAX_CHARACTERS:
        return False
    if _plain(value):
        return len(value) <= MAX_ADDRESS_OCTETS
    if not _parses_back(value):
        return False
    # Its domain spelled here even where the answer came from the cache, so that the spellings
    # a request keeps (``domains.spellings_kept``) hold it for the work that follows.
    ascii_domain(value.partition("@")[2])
    return True


def _plain(value: str) -> bool:
    """Whether ``value`` has the common form ``_parses_back`` accepts, checked at a hundredth
    of its cost. "=?" may open an RFC 2047 encoded word, which the parser decodes
    ("=?utf-8?q?a=40b?=@c" is not itself once parsed): such a value goes to the parser."""
    return _PLAIN.fullmatch(value) is not None and "=?" not in value


@functools.lru_cache(maxsize=CACHED_STRINGS)
def _parses_back(value: str) -> bool:
    """``is_email_address`` of a string, by the standard library's parser."""
    slow_steps.spend()  # 75 to 96 µs, pure Python, and a domain's encoding beside
    if value.count("@") != 1 or _CONTROL.search(value):
        return False
    local, _, domain = value.partition("@")
    if not local or not domain or any(character.isspace() for character in domain):
        return False
    try:  # an internationalised domain must have an ASCII (IDNA) form for the headers
        written = ascii_domain(domain)
    except UnicodeError:
        return False
    # A DNS label has 1 to 63 octets (RFC 1035), ASCII or encoded; checked once spelled, as
    # UTS #46 turns U+3002, U+FF0E and U+FF61 into dots ("b。" is "b.", its last label empty).
    labels = written.split(".")
    if len(local) + 1 + len(written) > MAX_ADDRESS_OCTETS or not all(
        0 < len(label) <= MAX_LABEL_OCTETS for label in labels
    ):
        return False
    try:
        parsed = Address(addr_spec=value)
    # AttributeError: the parser's own failure on an unclosed domain literal ("a@[x": its
    # defect list holds a defect where it expects a token), an address it cannot parse.
    except (ValueError, IndexError, AttributeError, email.errors.MessageError):
        return False
    return parsed.addr_spec == value


def mailbox_address(value: str) -> str | None:
    """The canonical form of a mailbox's address, or None when ``value`` is not one.

    Accepted: an RFC 5322 addr-spec (``is_email_address``) whose local part is a dot-atom and
    whose domain is a name (ASCII or IDNA). Returned: the local part as given, ``@``, the
    domain in ASCII form, lower-cased. Refused (None): anything else, notably HTML, control
    characters, display names, quoted local parts and domain literals.
    """
    if not value or not isinstance(value, str) or not is_email_address(value):
        return None
    local, _, domain = value.partition("@")
    if local.startswith('"') or domain.startswith("["):
        return None
    return f"{local}@{ascii_domain(domain).lower()}"


def spelled_by_idna_2003(value: str) -> str | None:
    """A mailbox's address as ``mailbox_address`` spelled it until 2026-12-07, with the
    standard library's IDNA 2003 codec (``straße.de`` as ``strasse.de``), or None where that
    spelling was the same as today's or there was none. A mailbox connected then keeps that
    spelling until its next connect (docs/identity.md, "Addresses spelled before IDNA 2008")."""
    local, _, domain = value.partition("@")
    if domain.isascii():
        return None
    try:
        before = f"{local}@{domain.encode('idna').decode('ascii').lower()}"
    except UnicodeError:
        return None
    return None if before == mailbox_address(value) else before


def same_address(first: str, second: str) -> bool:
    """Whether two valid addresses name the same mailbox (domain in ASCII form, any case)."""
    return _comparable(first) == _comparable(second)


def _comparable(address: str) -> str:
    local, _, domain = address.rpartition("@")
    # Not a valid address: compared as written, so it equals no valid one.
    with contextlib.suppress(UnicodeError):
        domain = ascii_domain(domain)
    return f"{local}@{domain}".casefold()
