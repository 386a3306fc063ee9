"""A budget of slow steps for work done on the event loop: pure bookkeeping, no I/O.

Most checks of a request take microseconds, but a few steps take about a millisecond each: a
new internationalised domain's encoding (0.3 to 1 ms, ``policy/domains.py``) and the standard
library's parse of an address outside the common form (75 to 96 µs, ``policy/addresses.py``).
A request may hold tens of thousands of them, and while they run on the loop every other
request, the worker's leases and the health checks wait: 15,000 new domains in a 1.3 MB batch
held it 6.8 to 8.5 s (docs/performance.md, "The addresses' checks"). So the API checks a
request on the loop within a budget of such steps (``within_budget``); a request that spends
it raises ``SlowWorkDeferred`` and is checked again in a thread of its own. Each slow step
calls ``spend`` before its work, which outside a budget costs one context variable's read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

SLOW_STEPS_ON_THE_LOOP = 32
"""Slow steps the API's checks may take on the loop, about 30 ms at most on this project's
development machine."""


ADDRESSES_ON_THE_LOOP = 2_000
"""Addresses a request may carry and still be handled on the loop. Each costs a few µs there
however common its form: checked against its format, hashed into the request's digest,
written into the stored message, measured for the size check; an 11 MB batch of 300,000 held
the loop 0.6 to 1.1 s. Past this many, that work is done beside the loop too
(docs/performance.md, "The addresses' checks")."""


BYTES_PARSED_ON_THE_LOOP = 256 * 1024
"""Bodies up to this size are parsed on the loop; a larger one is parsed and checked in a
thread, in one turn. The parse of 256 KB of the densest JSON takes 2.5 to 6 ms on this
project's development machine (a list of floats the slowest: each goes through a check in
Python), where an invoice with a 100 KB PDF takes 0.06 ms; 7.6 MB of floats held the loop 276
to 511 ms (docs/performance.md, "Nineteenth pass")."""


class SlowWorkDeferred(Exception):
    """The budget in force is spent: an internal signal, never an answer, caught where the
    budget was set (``api/parsing.py``), which does the work again in a thread. Not in
    ``errors.py``'s tree, as policy imports nothing of ours (as ``jobs.progress.LeaseLost``)."""


_LEFT: ContextVar[list[int] | None] = ContextVar("slow_steps_left", default=None)


@contextlib.contextmanager
def within_budget(steps: int = SLOW_STEPS_ON_THE_LOOP) -> Iterator[None]:
    """Within, ``spend`` may be called ``steps`` times; the next call, and every later one,
    raises ``SlowWorkDeferred``."""
    token = _LEFT.set([steps])
    try:
        yield
    finally:
        _LEFT.reset(token)


def spend() -> None:
    """Count one slow step against the budget in force, if any; ``SlowWorkDeferred`` once it
    is spent (before the step's work)."""
    left = _LEFT.get()
    if left is None:
        return
    if left[0] <= 0:
        raise SlowWorkDeferred("the checks' slow steps on the event loop are spent")
    left[0] -= 1
