"""Lanes: threads beside the event loop, for work too slow to do on it.

One event loop serves every request, renews the worker's leases and answers the health checks;
work that holds it for more than a few milliseconds holds all of them (docs/performance.md,
"The addresses' checks"). Such work runs in a lane: one thread of its own, in the caller's
context (its request id in the logs). Not the loop's default executor, whose threads refresh
access tokens (``tokens/access_tokens.py``) and redeem consents: a few slow requests would
have taken them all.

- ``CHECKS``: the API's costly checks of requests with many new internationalised domains or
  irregular addresses, and of bodies the compiled validator refused (``api/parsing.py``,
  ``jobs/intake.py``). Each work holds its request's parsed body while it waits, and the loop
  goes on reading other bodies meanwhile; so the lane admits works while the bodies they hold
  come to at most ``CHECKS_ADMITTED_BYTES``. Past that it refuses at once: ``LaneFull``,
  which the API answers ``503 server_busy`` with ``Retry-After`` (``api/errors.py``). A work
  alone in the lane is always admitted, and a small one (``CHECKS_ALWAYS_ADMITTED``: an
  ordinary request whose body the validator refused, to be explained) while the lane holds
  fewer than ``ALWAYS_ADMITTED_WORKS``.
- ``BUILDS``: the worker's messages too slow to build on the loop (``jobs/worker.py``). The
  worker's concurrency bounds them, so it admits them all.

A request admitted once is admitted again (its checks, then its message's size): it is not
refused halfway, its first work done for nothing. A work whose requester is gone by its turn
(``run``'s ``wanted``) is not done (``WorkAbandoned``): a client that hung up does not keep
the works behind it waiting.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Result = TypeVar("Result")

CHECKS_ADMITTED_BYTES = 64 * 1024 * 1024
"""The request bytes the costly checks' lane holds at once: four bodies of the default
``server.max_request_bytes`` (16 MiB), each several times that once parsed."""
CHECKS_ALWAYS_ADMITTED = 64 * 1024
"""Works holding at most these bytes are admitted whatever the lane holds: they cost it little
memory, and an invalid request of ordinary size is answered 400, not 503."""
ALWAYS_ADMITTED_WORKS = 64
"""Small works are always admitted while the lane holds fewer works than this."""
_LONGEST_RETRY_AFTER = 60


_ADMITTED: contextvars.ContextVar[tuple[Lane, ...]] = contextvars.ContextVar(
    "lanes_admitted", default=()
)
"""The lanes the current task (a request's handler) was admitted to."""


class LaneFull(Exception):
    """The lane holds as much as it admits. An internal signal, not in ``errors.py``'s tree
    (the kernel's modules do not import each other): the API answers it ``503 server_busy``,
    with ``retry_after`` (whole seconds, at least 1) for ``Retry-After``."""

    def __init__(self, lane: str, retry_after: int) -> None:
        super().__init__(f"the {lane} lane is full")
        self.retry_after = retry_after


class WorkAbandoned(Exception):
    """The work's requester was gone by its turn (``run``'s ``wanted``): it was not done."""


class Lane:
    """One thread beside the loop, admitting works while the bytes they hold come to at most
    ``admits_bytes`` (None: every work), and a work of at most ``always_admits`` bytes while
    it holds fewer than ``ALWAYS_ADMITTED_WORKS``."""

    def __init__(
        self, name: str, *, admits_bytes: int | None = None, always_admits: int = 0
    ) -> None:
        self.name = name
        self.admits_bytes = admits_bytes
        self.always_admits = always_admits
        self.held = 0
        """Works admitted and not finished, the one running included."""
        self.held_bytes = 0
        self.refused = 0
        """Works refused since the process started (``LaneFull``)."""
        self._lock = threading.Lock()  # both change on the loop and in the lane's thread
        self._seconds = 0.0  # a moving average of the works' durations, for Retry-After
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(
        self,
        work: Callable[[], Result],
        *,
        size: int = 0,
        wanted: Callable[[], bool] | None = None,
    ) -> Result:
        """``work()`` in the lane's thread, in the caller's context; ``size`` is the bytes it
        holds while it waits. ``LaneFull`` when the lane cannot admit it (never when the
        calling task was admitted before); ``WorkAbandoned`` when ``wanted()`` says no at the
        work's turn (asked in the lane's thread, so it must only read)."""
        admitted = _ADMITTED.get()
        with self._lock:
            limit = self.admits_bytes
            full = limit is not None and self.held > 0 and self.held_bytes + size > limit
            small = size <= self.always_admits and self.held < ALWAYS_ADMITTED_WORKS
            if full and not small and self not in admitted:
                self.refused += 1
                raise LaneFull(self.name, self.retry_after())
            self.held += 1
            self.held_bytes += size
        if self not in admitted and not (full and small):
            # Admitted on its size and the lane's room, not as a small work: admitted again.
            _ADMITTED.set((*admitted, self))
        context = contextvars.copy_context()

        def turn() -> Result:
            if wanted is not None and not wanted():
                raise WorkAbandoned(f"the work waiting in the {self.name} lane was abandoned")
            started = time.perf_counter()
            try:
                return context.run(work)
            finally:
                self._seconds += (time.perf_counter() - started - self._seconds) / 4

        def release() -> None:
            with self._lock:
                self.held -= 1
                self.held_bytes -= size

        try:
            future = self._thread.submit(turn)
        except BaseException:
            release()
            raise
        # Released when the work is done, or cancelled before its turn; not when the caller
        # stops waiting: a work already running holds its place until it ends.
        future.add_done_callback(lambda _: release())
        return await asyncio.wrap_future(future)

    def retry_after(self) -> int:
        """Whole seconds until the works held now are likely done, from 1 to 60."""
        expected = math.ceil(self._seconds * max(self.held, 1))
        return min(max(expected, 1), _LONGEST_RETRY_AFTER)


CHECKS = Lane(
    "costly-checks", admits_bytes=CHECKS_ADMITTED_BYTES, always_admits=CHECKS_ALWAYS_ADMITTED
)
BUILDS = Lane("costly-builds")
LANES = (CHECKS, BUILDS)
"""Every lane of the process, for the metrics (``mailbox_worker_lane_*``)."""
