"""Background loops and backoffs, written once.

``Periodic`` runs one step every ``interval`` seconds until a stop event is set: a step that
raises is counted (``Telemetry.loop_error`` with the loop's name), logged and tried again
(after ``interval``, or as a tenacity wait strategy says), and the loop keeps "last success"
bookkeeping, reported too (``Telemetry.loop_started`` with its interval, then
``loop_succeeded``) so that a stalled loop can be alerted on (docs/operations.md). The
daemon's background duties (revocation retries, callback delivery, scheduled key rotation,
the storage scrub) all run this way. ``report_loop_error`` is how every
background loop (these and the worker's) counts and logs a failed pass.

``exponential_backoff`` is the wait before the next attempt of one persisted item (an outbox
event, a pending revocation): doubling from a first wait, never longer than a longest one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable

from tenacity import AsyncRetrying, RetryCallState, wait_exponential
from tenacity.wait import wait_base

from mailbox_worker.errors import redacted_traceback
from mailbox_worker.telemetry import Telemetry

log = logging.getLogger(__name__)


def report_loop_error(
    logger: logging.Logger,
    telemetry: Telemetry | None,
    loop: str,
    error: BaseException,
    *,
    database_unavailable: bool = False,
) -> None:
    """Count a failed pass of ``loop`` (``Telemetry.loop_error``, when given) and log it: an outage
    (``database_unavailable``, as ``db.outage`` decides) as one warning line, anything else as
    an error with its redacted traceback. Neither quotes the error's message, which may quote
    data."""
    if telemetry is not None:
        telemetry.loop_error(loop)
    if database_unavailable:
        logger.warning("%s: database unavailable (%s); will try again", loop, type(error).__name__)
    else:
        logger.error(
            "%s: unexpected %s; will try again\n%s",
            loop,
            type(error).__name__,
            redacted_traceback(error),
        )


def wait_seconds(strategy: wait_base, attempt: int) -> float:
    """What a tenacity wait ``strategy`` answers after the ``attempt``-th failure (1-based)."""
    state = RetryCallState(retry_object=AsyncRetrying(), fn=None, args=(), kwargs={})
    state.attempt_number = max(1, attempt)
    return float(strategy(state))


def exponential_backoff(first: dt.timedelta, attempts: int, longest: dt.timedelta) -> dt.timedelta:
    """``first`` doubled ``attempts`` times, at most ``longest``."""
    strategy = wait_exponential(multiplier=first.total_seconds(), max=longest.total_seconds())
    return dt.timedelta(seconds=wait_seconds(strategy, attempts + 1))


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


class Periodic:
    """Runs ``step`` every ``interval`` seconds until ``run``'s stop event is set.

    ``wait_first``: sleep one interval before the first step. A step that raises is logged by
    ``report_loop_error`` as loop ``name`` and counted there when ``telemetry`` is given (the
    daemon gives it to every loop it runs); ``database_unavailable`` says which errors are an
    outage, logged without a traceback. The next step comes after ``on_error``'s wait for that
    many consecutive failures (``interval`` when None). The loop ends only between steps.
    """

    def __init__(
        self,
        what: str,
        step: Callable[[], Awaitable[object]],
        interval: float,
        *,
        name: str | None = None,
        telemetry: Telemetry | None = None,
        database_unavailable: Callable[[BaseException], bool] | None = None,
        wait_first: bool = False,
        on_error: wait_base | None = None,
        logger: logging.Logger = log,
    ) -> None:
        self.what = what
        self.name = name or what
        """The loop's fixed name (``what`` if not given): the ``loop`` label of its failures."""
        self._telemetry = telemetry
        self._database_unavailable = database_unavailable
        self._step = step
        self._interval = interval
        self._wait_first = wait_first
        self._on_error = on_error
        self._log = logger
        self.last_success: float | None = None
        """``time.monotonic()`` when a step last returned, None before the first."""
        self.failures = 0
        """Steps that raised since the last one that returned."""

    async def run(self, stop: asyncio.Event) -> None:
        if self._telemetry is not None:
            self._telemetry.loop_started(self.name, self._interval)
        if self._wait_first:
            await wait_or_stop(stop, self._interval)
        while not stop.is_set():
            await wait_or_stop(stop, await self.run_once())

    async def run_once(self) -> float:
        """One step; returns the seconds to wait before the next."""
        try:
            await self._step()
        except Exception as error:
            self.failures += 1
            outage = self._database_unavailable is not None and self._database_unavailable(error)
            report_loop_error(
                self._log, self._telemetry, self.name, error, database_unavailable=outage
            )
            if self._on_error is None:
                return self._interval
            return wait_seconds(self._on_error, self.failures)
        self.failures = 0
        self.last_success = time.monotonic()
        if self._telemetry is not None:
            self._telemetry.loop_succeeded(self.name)
        return self._interval
