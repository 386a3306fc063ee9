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

import contextlib
import dataclasses
import functools
from collections.abc import Iterator
from contextvars import ContextVar

import idna

from mailbox_worker.policy import slow_steps

CACHED_DOMAINS = 4096
"""How many domains' ASCII forms are kept. The encoder is pure Python (25 µs for
``bücher.example``), and an invoicing app writes to the same customers again and again."""


CACHED_LENGTH = 253
"""The longest name remembered: a domain's longest ASCII form (RFC 1035). Longer strings (a
return origin's host is checked before its length is; a failure's message quotes its label)
are encoded each time, so the cache holds at most ``CACHED_DOMAINS`` short names."""

_KEPT: ContextVar[dict[str, str] | None] = ContextVar("domain_spellings", default=None)
"""The spellings one request keeps (``spellings_kept``), where there are."""


def ascii_domain(domain: str) -> str:
    """``domain`` in its ASCII form, as mail headers and URLs carry it: ``bücher.example``
    becomes ``xn--bcher-kva.example``, ``straße.de`` ``xn--strae-oqa.de``. An ASCII name is
    returned as it is, unchecked. Raises ``UnicodeError`` for an internationalised name that
    has no such form: a label that IDNA 2008 disallows (``☃.net``), an empty label before the
    last, a label over 63 octets or a name over 253. A trailing dot, or a character UTS #46
    maps to one (``b。``), is kept: callers that need a host name refuse it themselves."""
    if domain.isascii():
        return domain
    kept = _KEPT.get()
    spelled = None if kept is None else kept.get(domain)
    if spelled is None:
        spelling = _spelling(domain) if len(domain) <= CACHED_LENGTH else _encoded(domain)
        if isinstance(spelling, _NoAsciiForm):
            raise spelling.error()
        spelled = spelling
        if kept is not None:
            kept[domain] = spelled
    return spelled


@dataclasses.dataclass(frozen=True)
class _NoAsciiForm:
    """Why a domain has no ASCII form: the encoder's exception, remembered as its class and
    message (an exception object raised again would gather every raise's traceback)."""

    kind: type[UnicodeError]
    message: str

    def error(self) -> UnicodeError:
        try:
            return self.kind(self.message)
        except TypeError:  # a class that takes more than a message (UnicodeEncodeError)
            return UnicodeError(self.message)


def _encoded(domain: str) -> str | _NoAsciiForm:
    """The ASCII form of ``domain`` (not ASCII), or why it has none."""
    slow_steps.spend()  # 0.3 to 1 ms, pure Python
    try:
        return idna.encode(domain, uts46=True, transitional=False).decode("ascii")
    except UnicodeError as error:
        return _NoAsciiForm(type(error), str(error))


_spelling = functools.lru_cache(maxsize=CACHED_DOMAINS)(_encoded)
"""``_encoded``, remembered for names of up to ``CACHED_LENGTH`` characters. Failures are kept
as spellings are: a batch may carry one invalid domain under thousands of local parts, each
of which would encode it again, 0.3 to 1 ms a time."""


@contextlib.contextmanager
def spellings_kept(kept: dict[str, str]) -> Iterator[None]:
    """Within, ``ascii_domain`` answers from ``kept`` and adds each new spelling to it.

    For one request's work: the API's checks and the intake spell the same recipients'
    domains, and a request may hold more new ones than the cache keeps (a 1.3 MB batch held
    15,000), each costing 0.3 to 1 ms to encode. The API checks such a request in a thread and
    hands ``kept`` to the intake, which then encodes nothing again (docs/performance.md,
    "The addresses' checks"). ``kept`` holds only what the request itself wrote, so it is
    as large as the request, and dropped with it."""
    token = _KEPT.set(kept)
    try:
        yield
    finally:
        _KEPT.reset(token)
