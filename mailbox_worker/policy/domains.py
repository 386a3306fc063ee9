"""The ASCII form of an internationalised domain name: pure functions, no I/O.

One spelling for every place a domain leaves the daemon or is compared: a recipient's address
in a message (``policy/addresses.py``), a return origin (``policy/origins.py``) and an egress
URL (``policy/egress.py``). It is IDNA 2008 with UTS #46's mapping, non-transitional: how mail
systems, browsers (the WHATWG URL standard: an ``Origin`` header) and aiohttp's URLs (yarl)
spell a name. The standard library's ``"idna"`` codec is IDNA 2003, which sends ``straße.de``
to ``strasse.de`` and ``ελληνικός.gr`` to another name: a different domain, whose owner would
have received the invoice (docs/api.md, "Addresses").
"""

from __future__ import annotations

import functools

import idna

CACHED_DOMAINS = 4096
"""How many domains' ASCII forms are kept. The encoder is pure Python (25 µs for
``bücher.example``), and an invoicing app writes to the same customers again and again."""


@functools.lru_cache(maxsize=CACHED_DOMAINS)
def ascii_domain(domain: str) -> str:
    """``domain`` in its ASCII form, as mail headers and URLs carry it: ``bücher.example``
    becomes ``xn--bcher-kva.example``, ``straße.de`` ``xn--strae-oqa.de``. An ASCII name is
    returned as it is, unchecked. Raises ``UnicodeError`` for an internationalised name that
    has no such form: a label that IDNA 2008 disallows (``☃.net``), an empty label before the
    last, a label over 63 octets or a name over 253. A trailing dot, or a character UTS #46
    maps to one (``b。``), is kept: callers that need a host name refuse it themselves."""
    if domain.isascii():
        return domain
    return idna.encode(domain, uts46=True, transitional=False).decode("ascii")
