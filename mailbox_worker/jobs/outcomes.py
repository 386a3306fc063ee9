"""Writing a job's outcome while the database may be away: ``OutcomeWriter``.

The provider has answered; what it answered must reach the job's row, or recovery will call a
delivered invoice ``unknown``. ``OutcomeWriter.write`` runs one write (``JobQueue.finish``,
``retry_later`` or ``hold``). If it raises — the database is unreachable, or anything
unexpected — the outcome is kept in memory (counted in ``Telemetry.pending_outcomes``), the
failure is counted and logged (loop ``outcome_write``), and the write is tried again with
exponential backoff, at once when the worker sees the database answer again
(``database_answered``), until it succeeds or the calling task is cancelled (the worker's
shutdown grace ran out). The job's task lives on meanwhile, so the worker keeps renewing its
lease and counts it against its concurrency. Only if the process ends first does lease
recovery settle the job (``unknown`` if its request was in flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from tenacity import AsyncRetrying, RetryCallState, wait_exponential
from tenacity.wait import wait_base

from mailbox_worker.db.outage import is_database_unavailable
from mailbox_worker.jobs.queue import Lease
from mailbox_worker.periodic import report_loop_error
from mailbox_worker.telemetry import Telemetry

log = logging.getLogger(__name__)

OUTCOME_BACKOFF = wait_exponential(multiplier=0.2, max=5.0)
"""Waits between tries of one outcome: 0.2 s, 0.4 s, 0.8 s... at most 5 s."""
LOOP = "outcome_write"


class OutcomeWriter:
    def __init__(self, telemetry: Telemetry, backoff: wait_base = OUTCOME_BACKOFF) -> None:
        self._telemetry = telemetry
        self._backoff = backoff
        self._pending: dict[str, str] = {}  # lease owner: the outcome's state, for the log
        self._answered = asyncio.Event()

    @property
    def pending(self) -> int:
        """Outcomes kept in memory now, waiting for the database."""
        return len(self._pending)

    def database_answered(self) -> None:
        """The database answered another query: pending writes are tried now."""
        self._answered.set()  # wakes every current waiter; later ones wait for the next
        self._answered.clear()

    async def write(self, lease: Lease, state: str, write: Callable[[], Awaitable[bool]]) -> bool:
        """``write()``'s answer (True: recorded; False: ``lease`` was lost), tried until it
        answers. Cancelling the caller abandons a pending outcome, logged and counted
        (``outcome_flushed("abandoned")``).

        The first try is a plain call: tenacity's retrying (about 30 µs to set up and run even
        when the first try succeeds) starts only after a failure, with that failure as its
        first attempt, so the waits and what is logged are as if it had run from the start."""
        try:
            recorded = await write()
        except Exception as error:  # any failure: kept and tried again
            failure = error
        else:
            self._written(lease, state, recorded)
            return recorded
        # Outside the handler: a later failure must not carry this one as its context (the
        # log would call a bug after an outage "database unavailable").
        recorded = await self._retry(lease, state, write, failure)
        self._written(lease, state, recorded)
        return recorded

    async def _retry(
        self,
        lease: Lease,
        state: str,
        write: Callable[[], Awaitable[bool]],
        first_failure: Exception,
    ) -> bool:
        """``write()`` tried again with backoff after its first try raised ``first_failure``."""
        failure: Exception | None = first_failure
        retrying = AsyncRetrying(
            wait=self._backoff,
            sleep=self._sleep,
            before_sleep=lambda attempt: self._failed(lease, state, attempt),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if failure is not None:  # the first try's, as tenacity's first attempt
                        raised, failure = failure, None
                        raise raised
                    recorded = await write()
        except asyncio.CancelledError:
            if self._pending.pop(lease.owner, None) is not None:
                self._telemetry.pending_outcomes(len(self._pending))
                self._telemetry.outcome_flushed("abandoned")
                log.error(
                    "job %s: outcome %s could not be written before the worker stopped; "
                    "lease recovery will settle the job",
                    lease.job_id,
                    state,
                )
            raise
        return recorded

    def _written(self, lease: Lease, state: str, recorded: bool) -> None:
        # Written on demand, not on a schedule: its last success dates the last outcome written
        # (a stall shows as mailbox_worker_pending_outcomes staying above 0).
        self._telemetry.loop_succeeded(LOOP)
        if self._pending.pop(lease.owner, None) is not None:
            self._telemetry.pending_outcomes(len(self._pending))
            self._telemetry.outcome_flushed("written" if recorded else "lease_lost")
            log.info("job %s: pending outcome %s written", lease.job_id, state)

    def _failed(self, lease: Lease, state: str, attempt: RetryCallState) -> None:
        error = attempt.outcome.exception() if attempt.outcome else None
        if error is None:  # pragma: no cover - tenacity sleeps only after a failure here
            return
        if lease.owner not in self._pending:
            self._pending[lease.owner] = state
            self._telemetry.pending_outcomes(len(self._pending))
            log.warning(
                "job %s: outcome %s kept in memory until it can be written", lease.job_id, state
            )
        report_loop_error(
            log, self._telemetry, LOOP, error, database_unavailable=is_database_unavailable(error)
        )

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._answered.wait(), timeout=seconds)
