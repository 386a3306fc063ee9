"""The worker: claims due jobs, sends each through its provider, records the outcome.

Only the loop, concurrency, lease renewal and shutdown live here; every state change goes
through ``JobQueue``. A job's provider request is marked "in flight" in the database just
before it leaves, so that if this process dies the job becomes ``unknown`` instead of being
sent a second time. Each job is worked on under the ``Lease`` of its claim, and by one task
at a time: a claim that returns a job another task still holds means that task's lease was
lost, and it is cancelled. An outcome the database cannot take yet is kept by the task
(``jobs/outcomes.py``) until it is written; the job keeps its lease and its slot meanwhile.
Housekeeping renews this worker's own leases before it recovers expired ones, so the worker
never recovers a job it is still working on. The worker leases only as many jobs as it has
free slots (``concurrency``); the claim keeps each mailbox within its limits across every
worker (docs/architecture.md#mailbox-limits), and a 429 pauses the mailbox for all of them.
On stop, it claims nothing more, hands back at once the jobs it claimed but has not started,
lets started jobs finish (and pending outcomes be written) within the grace period, and
returns. A worker claims again at once only when its last claim may have left due jobs behind
(``ClaimBatch.more``); otherwise, and when idle, it sleeps until the next queued job is due (as
the claim saw it: ``ClaimBatch.next_due``), at most ``poll_interval``, unless woken: by an
enqueue in this process (``wake``), or in any process on PostgreSQL through
``jobs/wakeups.py`` (jobs it hands back or recovers it announces there), or by one of its jobs
finishing (a free slot). A free slot is left to wait only when it cannot help: the last claim
took every due job (``ClaimBatch.due_left``), the worker requeued none since, and it hears
every enqueue of every process at once (``hears_every_enqueue``); otherwise a finishing job
wakes it, as a poll would, only sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from tenacity import wait_exponential

from mailbox_worker import lanes
from mailbox_worker.clock import Clock, utcnow
from mailbox_worker.db.mailboxes import MailboxStore
from mailbox_worker.db.models import Mailbox
from mailbox_worker.db.outage import is_database_unavailable
from mailbox_worker.errors import (
    AccessTokenRejected,
    DeliveryError,
    IdentityMisconfigured,
    OutcomeUnknown,
    PermanentError,
    ReauthRequired,
    Throttled,
    TransientError,
)
from mailbox_worker.jobs.claims import ClaimBatch
from mailbox_worker.jobs.limits import LimitDefaults, ProviderLimits
from mailbox_worker.jobs.mime import build_message, builds_quickly
from mailbox_worker.jobs.outcomes import OutcomeWriter
from mailbox_worker.jobs.progress import JobProgress, LeaseLost, recorded_draft
from mailbox_worker.jobs.queue import ClaimedJob, JobQueue, Lease
from mailbox_worker.jobs.retry import retry_delay
from mailbox_worker.jobs.transitions import Outcome
from mailbox_worker.jobs.wakeups import idle_seconds
from mailbox_worker.periodic import report_loop_error, wait_seconds
from mailbox_worker.providers.base import DeliveryReceipt, MailProvider, OutgoingMessage
from mailbox_worker.states import JobState, MailboxState
from mailbox_worker.telemetry import Telemetry


@dataclass(frozen=True)
class WorkerSettings:
    """The ``[worker]`` settings section (see ``config/mailbox-worker.toml``)."""

    concurrency: int = 8
    per_mailbox_concurrency: int = 4
    """Every mailbox's concurrency unless set on the mailbox, enforced by the claim across
    all workers; 4 is Graph's per-mailbox limit."""
    microsoft_rate_per_minute: int = 30
    microsoft_daily_recipients: int = 10_000
    google_rate_per_minute: int = 0
    google_daily_recipients: int = 2_000
    """Provider defaults of the mailbox limits (0: no limit); a mailbox's own values win."""
    poll_interval: float = 1.0
    lease_seconds: float = 120.0
    shutdown_grace: float = 25.0
    max_attempts: int = 8
    retry_initial: float = 5.0
    retry_max: float = 1800.0

    def mailbox_limits(self) -> LimitDefaults:
        """The defaults ``JobQueue`` applies to mailboxes without limits of their own."""
        return LimitDefaults(
            max_concurrency=self.per_mailbox_concurrency,
            providers={
                "microsoft": ProviderLimits(
                    self.microsoft_rate_per_minute or None, self.microsoft_daily_recipients or None
                ),
                "google": ProviderLimits(
                    self.google_rate_per_minute or None, self.google_daily_recipients or None
                ),
            },
        )


log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL = 5.0
LOOP_BACKOFF = wait_exponential(multiplier=0.5, max=15.0)
"""Waits after consecutive failed passes of the loop: 0.5 s, 1 s, 2 s... at most 15 s."""


class AccessTokenSource(Protocol):
    """Where the worker gets access tokens (``tokens.access_tokens.AccessTokens``)."""

    async def get(self, mailbox: Mailbox, *, force_refresh: bool = False) -> str: ...

    def forget(self, mailbox_id: str) -> None: ...

    def reject(self, mailbox_id: str, token: str) -> None: ...


def worker_name() -> str:
    """``host:pid:random``, short enough (host cut to 48) that a claim's lease owner
    (``queue.lease_owner``: the name and a suffix, 80 at most) keeps it whole."""
    return f"{socket.gethostname()[:48]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(
        self,
        queue: JobQueue,
        mailboxes: MailboxStore,
        tokens: AccessTokenSource,
        providers: Mapping[str, MailProvider],
        settings: WorkerSettings,
        telemetry: Telemetry,
        name: str | None = None,
        clock: Clock = utcnow,
        *,
        announce: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``announce`` tells the other worker processes that jobs became due
        (jobs/wakeups.py)."""
        self._queue = queue
        self._announce = announce
        self._mailboxes = mailboxes
        self._tokens = tokens
        self._providers = providers
        self._settings = settings
        self._telemetry = telemetry
        self._clock = clock
        self.name = name or worker_name()
        self._wakeup = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[None]] = {}  # every job it holds a lease on
        self._leases: dict[str, Lease] = {}  # the lease each of those tasks works under
        self._started: set[str] = set()  # of those, the ones that started
        self._outcomes = OutcomeWriter(telemetry)
        self._lease = dt.timedelta(seconds=settings.lease_seconds)
        self._housekept_at: float | None = None  # time.monotonic() of the last housekeeping
        self._slot_wakes = True
        """Whether a job of ours finishing wakes the loop: False only while the last claim
        took every due job (``ClaimBatch.due_left``) and nothing since requeued one, when a
        free slot would only find nothing."""
        self._requeued = 0  # jobs this worker put back in the queue (``_retry``)
        self._finished = 0  # jobs of this worker that finished (``_done``)
        self.hears_every_enqueue: Callable[[], bool] = lambda: False
        """Whether an enqueue (or any change that makes a job due) in any process wakes this
        worker now: the ``App`` says so on SQLite (one process, whose intake wakes it) and
        while its PostgreSQL listener listens. Until then a finishing job always wakes the
        worker, as before any claim could tell it nothing was left."""

    def wake(self) -> None:
        """Look for work now rather than at the next poll (called after an enqueue)."""
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then drain in-flight jobs within the grace period."""
        log.info("worker %s started (concurrency %d)", self.name, self._settings.concurrency)
        renewer = asyncio.create_task(self._renew_leases(stop), name="lease-renewal")
        self._telemetry.loop_started("worker", self._settings.poll_interval)
        self._telemetry.loop_started("housekeeping", HOUSEKEEPING_INTERVAL)
        failures = 0
        try:
            while not stop.is_set():
                # Cleared before the pass, not before the sleep: a wake-up that comes while
                # the pass runs cuts the sleep after it short instead of being lost.
                self._wakeup.clear()
                try:
                    batch = await self._pass()
                except Exception as error:
                    # Never end quietly: a database outage or a bug in one pass is logged,
                    # counted and waited out (an enqueue cuts the wait short), then retried.
                    failures += 1
                    self._slot_wakes = True
                    self._loop_failed("worker", error)
                    await self._sleep(stop, wait_seconds(LOOP_BACKOFF, failures))
                    continue
                failures = 0
                self._telemetry.loop_succeeded("worker")
                self._outcomes.database_answered()
                if batch is None:
                    # Full, nothing claimed: a job of ours finishing wakes the loop (``_done``:
                    # ``_slot_wakes`` is set).
                    await self._sleep(stop)
                elif not (batch.jobs and batch.more) or self._free_slots() <= 0:
                    # Nothing due, all that was due is taken (``ClaimBatch.more``), or no slot
                    # left: wait for an enqueue, a slot (``_done``, when it can help), the
                    # next scheduled job or the poll. Else claim again at once.
                    poll = self._settings.poll_interval
                    await self._sleep(stop, idle_seconds(batch.next_due, self._clock(), poll))
        finally:
            await self._drain()
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            log.info("worker %s stopped", self.name)

    async def run_once(self) -> int:
        """One pass of the loop: housekeeping (on the first pass, then every
        ``HOUSEKEEPING_INTERVAL`` seconds), then claim due jobs into the free slots and start
        them. Returns how many it claimed; does not wait for them to finish."""
        batch = await self._pass()
        return 0 if batch is None else len(batch.jobs)

    async def _pass(self) -> ClaimBatch | None:
        """``run_once``: what the claim said (None: no free slot, so no claim)."""
        now = time.monotonic()
        if self._housekept_at is None or now - self._housekept_at > HOUSEKEEPING_INTERVAL:
            await self._housekeeping()
            self._housekept_at = time.monotonic()
        return await self._claim()

    async def run_until_idle(self) -> None:
        """Process every job that is due now, then return (for tests; wrap in a timeout)."""
        while True:
            await self._housekeeping()
            batch = await self._claim()
            if (batch is None or not batch.jobs) and not self._in_flight:
                return
            if self._in_flight:
                await asyncio.wait(
                    list(self._in_flight.values()), return_when=asyncio.FIRST_COMPLETED
                )

    async def _sleep(self, stop: asyncio.Event, seconds: float | None = None) -> None:
        """Wait ``seconds`` (the poll interval when None), less if stopped or woken (since the
        pass before it began)."""
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wakeup.wait())]
        timeout = self._settings.poll_interval if seconds is None else seconds
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _announce_due(self) -> None:
        """Tell the other worker processes about jobs this one made due (best effort: they
        find them at their next poll otherwise)."""
        if self._announce is None:
            return
        try:
            await self._announce()
        except Exception as error:
            self._loop_failed("worker", error)

    def _free_slots(self) -> int:
        return self._settings.concurrency - len(self._in_flight)

    async def _claim(self) -> ClaimBatch | None:
        free = self._free_slots()
        if free <= 0:
            self._slot_wakes = True  # what is due is still to be claimed
            return None
        requeued, finished = self._requeued, self._finished
        batch = await self._queue.claim_batch(self.name, free, self._lease)
        # A job requeued while the claim ran may not have been seen by it.
        self._slot_wakes = batch.due_left or self._requeued != requeued
        if batch.due_left and self._finished != finished:
            # A job of ours finished while the claim ran, when ``_done`` could not yet know
            # that its slot would help (e.g. its mailbox, at its concurrency, has jobs due).
            self._wakeup.set()
        claimed = batch.jobs
        for item in claimed:
            job_id = item.job.id
            stale = self._in_flight.get(job_id)
            if stale is not None:
                # Claimable again means that task's lease was lost (expired and recovered):
                # its updates are fenced off, and it must not hold the job beside this one.
                log.warning("job %s: claimed again while an older task held it; cancelled", job_id)
                stale.cancel()
                self._started.discard(job_id)
            task = asyncio.create_task(self._guarded(item), name=f"job-{job_id}")
            self._in_flight[job_id] = task
            self._leases[job_id] = item.lease
            task.add_done_callback(functools.partial(self._done, job_id))
        self._telemetry.in_flight(len(self._in_flight))
        return batch

    def _done(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self._in_flight.get(job_id) is not task:
            return  # a stale task, cancelled when its job was claimed again
        del self._in_flight[job_id]
        del self._leases[job_id]
        self._started.discard(job_id)
        self._telemetry.in_flight(len(self._in_flight))
        self._finished += 1
        if self._slot_wakes or not self.hears_every_enqueue():
            self._wakeup.set()

    async def _drain(self) -> None:
        await self._hand_back_unstarted()
        if not self._in_flight:
            return
        log.info(
            "waiting up to %.0fs for %d jobs", self._settings.shutdown_grace, len(self._in_flight)
        )
        _, pending = await asyncio.wait(
            list(self._in_flight.values()), timeout=self._settings.shutdown_grace
        )
        for task in pending:
            task.cancel()  # their leases expire; recovery decides queued or unknown
        if pending:
            await asyncio.wait(pending)

    async def _hand_back_unstarted(self) -> None:
        # Without this, each would start as a slot frees up during the grace period, or wait
        # out its lease if the grace period ends first.
        waiting = {
            job_id: task for job_id, task in self._in_flight.items() if job_id not in self._started
        }
        if not waiting:
            return
        leases = [self._leases[job_id] for job_id in waiting]
        for task in waiting.values():
            task.cancel()
        await asyncio.wait(waiting.values())
        try:
            handed = await self._queue.hand_back(leases)
        except Exception as error:  # their leases expire; recovery requeues them
            self._loop_failed("worker", error)
            return
        log.info("handed back %d claimed jobs that had not started", handed)
        if handed:
            await self._announce_due()

    async def _housekeeping(self) -> None:
        # Own leases first: a lease that expired while the database was slow or away must not
        # be recovered (its job requeued, or `unknown`) by the worker still working on it.
        if self._leases:
            await self._queue.renew_leases(list(self._leases.values()), self._lease)
        requeued, unknown = await self._queue.recover_expired_leases()
        self._telemetry.leases_recovered("requeued", requeued)
        self._telemetry.leases_recovered("unknown", unknown)
        expired = await self._queue.fail_past_deadline()
        if requeued:
            await self._announce_due()
        if requeued or unknown or expired:
            log.warning(
                "recovered jobs: %d requeued, %d unknown (worker lost in flight), %d past deadline",
                requeued,
                unknown,
                expired,
            )
        # Read from the shared database: every worker reports the same figures
        # (docs/operations.md: aggregate them with max).
        sample = await self._queue.sample()
        for state, count in sample.counts.items():
            self._telemetry.jobs_in_state(state, count)
        self._telemetry.job_age(JobState.QUEUED, sample.oldest_due_queued)
        self._telemetry.job_age(JobState.RUNNING, sample.oldest_running)
        mailboxes = await self._mailboxes.count_by_state(sorted(self._providers))
        for (provider, state), count in mailboxes.items():
            self._telemetry.mailboxes_in_state(provider, state, count)
        self._telemetry.loop_succeeded("housekeeping")

    async def _renew_leases(self, stop: asyncio.Event) -> None:
        interval = max(self._settings.lease_seconds / 3, 0.5)
        self._telemetry.loop_started("lease_renewal", interval)
        while True:
            await asyncio.sleep(interval)
            if not self._leases:
                self._telemetry.loop_succeeded("lease_renewal")  # nothing to renew is a pass
                continue
            try:
                await self._queue.renew_leases(list(self._leases.values()), self._lease)
            except Exception as error:  # the next interval tries again
                self._loop_failed("lease_renewal", error)
            else:
                self._telemetry.loop_succeeded("lease_renewal")
                self._outcomes.database_answered()

    def _loop_failed(self, loop: str, error: Exception) -> None:
        """Log (without the driver's message, which may quote data) and count a failed pass."""
        report_loop_error(
            log, self._telemetry, loop, error, database_unavailable=is_database_unavailable(error)
        )

    async def _guarded(self, claimed: ClaimedJob) -> None:
        try:
            # No per-process slot per mailbox: the claim leased it only within the mailbox's
            # concurrency across every worker (docs/architecture.md#mailbox-limits).
            self._started.add(claimed.job.id)
            await self._process(claimed)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s: unexpected error outside the provider call", claimed.job.id)
            error = TransientError("internal error", code="internal_error")
            await self._retry(claimed, error, provider="none")

    async def _process(self, claimed: ClaimedJob) -> None:
        job, mailbox = claimed.job, claimed.mailbox  # as the claim read it (jobs/claims.py)
        started = time.perf_counter()
        if mailbox.state != MailboxState.CONNECTED or mailbox.address is None:
            # Not from the claim, which leases only connected mailboxes' jobs; a guard.
            await self._hold(claimed, "mailbox_reauth_required", "waiting for consent")
            return
        await self._deliver(claimed, mailbox, mailbox.address)
        self._telemetry.job_processed(mailbox.provider, job.mode, time.perf_counter() - started)

    @staticmethod
    async def _build(claimed: ClaimedJob, sender: str) -> bytes:
        """The claimed job's message, from ``sender``. Its payload is let go here
        (``ClaimedJob.take_payload``: a retry claims it again), so that a large invoice is
        not held through the provider's call. One that would hold the loop, and every other
        job's lease and call with it, for up to seconds (many internationalised domains or
        irregular addresses; docs/performance.md, "The addresses' checks") is built in a
        lane of its own (``lanes.BUILDS``). Raises ``ValueError`` as ``build_message`` does."""
        payload = claimed.take_payload()
        build = functools.partial(
            build_message, payload, message_id=claimed.job.message_id, sender=sender
        )
        if builds_quickly(payload):
            return build()
        return await lanes.BUILDS.run(build)

    async def _deliver(self, claimed: ClaimedJob, mailbox: Mailbox, sender: str) -> None:
        """Token, MIME, the provider's calls and the outcome of one job of a connected
        ``mailbox`` whose address is ``sender``."""
        job, lease = claimed.job, claimed.lease
        provider = self._providers[mailbox.provider]
        try:
            mime = await self._build(claimed, sender)
        except ValueError as error:
            # The intake built or bounded this message, so only a change since can refuse it: a
            # rule (a domain IDNA 2008 disallows, queued when IDNA 2003 spelled it; docs/api.md,
            # "Addresses"), or a new release of the builder's libraries. Building it again
            # cannot help: it fails, and the log names the job and the error's type only.
            reason = f"the message can no longer be built ({type(error).__name__})"
            log.warning("job %s: %s; it fails", job.id, reason)
            await self._finish(claimed, Outcome(JobState.FAILED, "invalid_message", reason))
            return
        try:
            token = await self._tokens.get(mailbox)
        except ReauthRequired as error:
            await self._lose_grant(mailbox, claimed, error)
            return
        except TransientError as error:
            await self._retry(claimed, error, mailbox.provider)
            return
        # A send is marked in flight by the provider, just before the request that can
        # deliver it (jobs/progress.py); a draft delivers nothing, but stays marked for the
        # whole call as before: a crash while drafting leaves it unknown, not drafted twice.
        progress = JobProgress(self._queue, lease)
        if job.mode != "send" and not await self._queue.start_attempt(lease):
            log.warning("job %s: lease lost or expired before sending; not sent", job.id)
            return
        draft_id, draft_complete = recorded_draft(job)
        message = OutgoingMessage(
            job_id=job.id,
            mime=mime,
            message_id=job.message_id,
            draft_id=draft_id,
            draft_complete=draft_complete,
        )
        operation = "send" if job.mode == "send" else "create_draft"
        started = time.perf_counter()
        try:
            if job.mode == "send":
                receipt = await provider.send(token, message, progress=progress)
            else:
                receipt = await provider.create_draft(token, message, progress=progress)
        except LeaseLost:
            log.warning("job %s: lease lost during delivery; another worker owns it", job.id)
            return
        except DeliveryError as error:
            self._count_call(mailbox, operation, error.code, started, error.provider_status)
            if isinstance(error, AccessTokenRejected):
                self._tokens.reject(mailbox.id, token)
            await self._delivery_failed(mailbox, claimed, error)
            return
        except Exception:
            # We cannot tell whether the request reached the provider: never retry blindly.
            log.exception("job %s: unexpected error during the provider call", job.id)
            self._count_call(mailbox, operation, "internal_error", started, None)
            await self._finish(
                claimed, Outcome(JobState.UNKNOWN, "internal_error", "unexpected error in flight")
            )
            return
        # Accepted means a 2xx answer; the receipt does not carry which one.
        self._count_call(mailbox, operation, "ok", started, 200)
        await self._finish(claimed, _success(receipt))

    async def _delivery_failed(
        self, mailbox: Mailbox, claimed: ClaimedJob, error: DeliveryError
    ) -> None:
        if isinstance(error, TransientError):
            await self._retry(claimed, error, mailbox.provider)
        elif isinstance(error, ReauthRequired):
            await self._lose_grant(mailbox, claimed, error)
        elif isinstance(error, OutcomeUnknown):
            await self._finish(claimed, _outcome(JobState.UNKNOWN, error))
        elif isinstance(error, PermanentError):
            await self._finish(claimed, _outcome(JobState.FAILED, error))
        else:  # pragma: no cover - the tree has no other DeliveryError
            await self._finish(claimed, _outcome(JobState.UNKNOWN, error))

    async def _retry(self, claimed: ClaimedJob, error: TransientError, provider: str) -> None:
        """Back to ``queued`` for later, or ``failed`` once the retries are spent; ``provider``
        (the mailbox's, ``none`` if not known) labels the deferral."""
        job = claimed.job
        # Neither the provider's throttling nor our own misconfiguration is the job's fault.
        throttled = isinstance(error, (Throttled, IdentityMisconfigured))
        failures = job.transient_failures + (0 if throttled else 1)
        if not throttled and failures >= self._settings.max_attempts:
            await self._finish(
                claimed,
                Outcome(
                    JobState.FAILED,
                    "retries_exhausted",
                    f"gave up after {failures} transient errors (last: {error.code})",
                    error.provider_status,
                ),
            )
            return
        delay = retry_delay(error, failures, self._settings)
        if isinstance(error, AccessTokenRejected):
            delay = 0.0
        run_after = self._clock() + dt.timedelta(seconds=delay)
        # The provider throttles the mailbox, not the job: every worker leaves all of its
        # jobs until then, while other mailboxes keep flowing.
        if isinstance(error, Throttled) and await self._mailboxes.pause(
            claimed.job.mailbox_id, run_after, "throttled"
        ):
            log.info("mailbox %s paused for %.0fs (throttled)", claimed.job.mailbox_id, delay)
            self._telemetry.mailbox_paused("throttled")
        outcome = _outcome(JobState.QUEUED, error)
        moved = await self._outcomes.write(
            claimed.lease,
            JobState.QUEUED,
            lambda: self._queue.retry_later(
                claimed.lease, run_after, outcome, failure=not throttled
            ),
        )
        if moved:
            self._requeued += 1
            self._slot_wakes = True  # back in the queue: the next claim must see it
            self._telemetry.job_transition(JobState.QUEUED, error.code)
            self._telemetry.job_deferred(provider, error.code, delay)

    async def _lose_grant(
        self, mailbox: Mailbox, claimed: ClaimedJob, error: ReauthRequired
    ) -> None:
        self._tokens.forget(mailbox.id)
        if await self._mailboxes.require_consent_again(mailbox, error.code, f"worker:{self.name}"):
            log.warning("mailbox %s needs consent again (%s)", mailbox.id, error.code)
            self._telemetry.mailbox_reauth(mailbox.provider, error.code)
        # The mailbox's other queued jobs first, this job last: once it reads `held`, the
        # sweep is done (a job enqueued later is held by the intake, not by this sweep).
        await self._queue.hold_for_mailbox(mailbox.id, error.code, error.message)
        if await self._hold(claimed, error.code, error.message):
            self._telemetry.job_transition(JobState.HELD, error.code)

    async def _hold(self, claimed: ClaimedJob, code: str, message: str) -> bool:
        lease = claimed.lease
        return await self._outcomes.write(
            lease, JobState.HELD, lambda: self._queue.hold(lease, code, message)
        )

    async def _finish(self, claimed: ClaimedJob, outcome: Outcome) -> None:
        lease = claimed.lease
        if await self._outcomes.write(
            lease, outcome.state, lambda: self._queue.finish(lease, outcome)
        ):
            self._telemetry.job_transition(outcome.state, outcome.code or "ok")
        else:
            log.warning("job %s: lease lost; outcome %s not recorded", lease.job_id, outcome.state)

    def _count_call(
        self, mailbox: Mailbox, operation: str, outcome: str, started: float, status: int | None
    ) -> None:
        self._telemetry.provider_request(
            mailbox.provider, operation, outcome, time.perf_counter() - started, status
        )


def _success(receipt: DeliveryReceipt) -> Outcome:
    return Outcome(
        JobState(receipt.state),
        provider_message_id=receipt.provider_message_id,
        provider_draft_id=receipt.provider_draft_id,
        web_link=receipt.web_link,
    )


def _outcome(state: JobState, error: DeliveryError) -> Outcome:
    return Outcome(state, error.code, error.message, error.provider_status)
