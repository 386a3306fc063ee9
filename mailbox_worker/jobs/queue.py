"""The worker's side of the job table, ``JobQueue``: claim due jobs under a lease, renew and
hand back leases, mark a provider request in flight, record what came of it, and recover the
jobs of workers that vanished.

Every claim takes a ``Lease`` of its own: ``lease_owner`` is the worker's name plus a random
suffix, new at each claim, and every later update of the job checks it
(``transitions.held_by``). So a task whose lease was lost (recovered, then claimed again, even
by the same worker) can neither start a request nor record anything, and a worker that lost
its lease cannot overwrite what another recorded. ``start_attempt`` also refuses a lease past
its expiry: a worker that could not renew in time never sends. Claiming locks the candidate
mailboxes' rows (``FOR NO KEY UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's single writer
serialises claims) and keeps each mailbox within its limits (``jobs/limits.py``,
docs/architecture.md#mailbox-limits). Transitions are described in ``jobs/transitions.py`` and
docs/architecture.md#job-states.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailbox_worker.clock import Clock, utcnow
from mailbox_worker.db.models import Job, JobContent, Mailbox
from mailbox_worker.jobs.limits import (
    DAILY_WINDOW,
    RATE_WINDOW,
    Deferral,
    LimitDefaults,
    MailboxLimits,
    MailboxUsage,
    allowance,
    deferral,
    effective_limits,
    recipient_count,
    round_robin,
    within_daily_cap,
)
from mailbox_worker.jobs.transitions import Outcome, announce, held_by, job_event, move_each
from mailbox_worker.states import TERMINAL, JobState, MailboxState

OWNER_LENGTH = 80
"""The width of ``jobs.lease_owner`` (``String(80)``)."""
SUFFIX_BYTES = 6


@dataclass(frozen=True)
class Lease:
    """One claim of one job: what every later update of the job by its claimant checks."""

    job_id: str
    worker: str
    """The claiming worker's name, recorded in the job's events."""
    owner: str
    """The row's ``lease_owner``: unique to this claim."""


def lease_owner(worker: str) -> str:
    """A ``lease_owner`` for one claim by ``worker``: its name (cut to fit the column) and a
    random suffix that no other claim shares."""
    suffix = secrets.token_hex(SUFFIX_BYTES)
    return f"{worker[: OWNER_LENGTH - len(suffix) - 1]}/{suffix}"


@dataclass(frozen=True)
class ClaimedJob:
    job: Job
    payload: dict[str, Any]
    lease: Lease


class JobQueue:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock = utcnow,
        limits: LimitDefaults | None = None,
    ) -> None:
        """``limits``: what applies to mailboxes without limits of their own."""
        self._sessions = sessions
        self._clock = clock
        self._limits = limits or LimitDefaults()

    async def count_by_state(self) -> dict[str, int]:
        query = select(Job.state, func.count()).group_by(Job.state)
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        counts: dict[str, int] = dict.fromkeys(JobState, 0)
        counts.update({state: int(count) for state, count in rows})
        return counts

    async def claim(self, worker: str, limit: int, lease: dt.timedelta) -> list[ClaimedJob]:
        """Lease at most ``limit`` due jobs of connected mailboxes to ``worker``, within each
        mailbox's limits, sharing the slots between accounts in turns.

        One transaction: lock the rows of the mailboxes with due jobs that are neither paused
        nor at their concurrency (``FOR NO KEY UPDATE SKIP LOCKED``: a mailbox another worker
        is claiming for is skipped this round), read their usage, defer those at their rate or
        daily cap (``paused_until``), and lease their next jobs (priority, then ``run_after``).
        Because a mailbox's usage is read and its jobs leased only under the lock on its row,
        concurrent claimers together never exceed its limits (docs/architecture.md#mailbox-limits).
        """
        if limit <= 0:
            return []
        now = self._clock()
        owner = lease_owner(worker)
        async with self._sessions.begin() as session:
            mailboxes = await self._lock_mailboxes(session, now, limit)
            if not mailboxes:
                return []
            usages = await self._usage(session, [mailbox.id for mailbox in mailboxes], now)
            limits = [effective_limits(mailbox, self._limits) for mailbox in mailboxes]
            next_ids = []
            for mailbox, mailbox_limits in zip(mailboxes, limits, strict=True):
                most = await self._allowance(session, mailbox, mailbox_limits, usages, now)
                next_ids.append(
                    await self._next_job_ids(session, mailbox.id, most, now) if most else []
                )
            shares = round_robin(limit, [len(ids) for ids in next_ids])
            wanted = [ids[:share] for ids, share in zip(next_ids, shares, strict=True)]
            payloads = await self._payloads(session, [i for ids in wanted for i in ids])
            chosen: list[str] = []
            for mailbox, mailbox_limits, wanted_ids in zip(mailboxes, limits, wanted, strict=True):
                ids = [job_id for job_id in wanted_ids if job_id in payloads]  # content purged
                counts = [recipient_count(payloads[job_id]) for job_id in ids]
                usage = usages[mailbox.id]
                fit = within_daily_cap(mailbox_limits, usage, counts)
                if ids and not fit:
                    until = (usage.oldest_claim_last_day or now) + DAILY_WINDOW
                    await self._defer(session, mailbox.id, Deferral(until, "daily_cap"))
                chosen += ids[:fit]
            if not chosen:
                return []
            claimed = await self._lease(session, worker, owner, chosen, payloads, now + lease, now)
        return [
            ClaimedJob(claimed[i], payloads[i], Lease(i, worker, owner))
            for i in chosen
            if i in claimed
        ]

    async def _allowance(
        self,
        session: AsyncSession,
        mailbox: Mailbox,
        limits: MailboxLimits,
        usages: Mapping[str, MailboxUsage],
        now: dt.datetime,
    ) -> int:
        """How many jobs the locked mailbox may have now; 0, deferring it, at a rate or cap."""
        deferred = deferral(limits, usages[mailbox.id], now)
        if deferred is not None:
            await self._defer(session, mailbox.id, deferred)
            return 0
        return allowance(limits, usages[mailbox.id])

    async def _lease(
        self,
        session: AsyncSession,
        worker: str,
        owner: str,
        job_ids: Sequence[str],
        payloads: Mapping[str, dict[str, Any]],
        expires_at: dt.datetime,
        now: dt.datetime,
    ) -> dict[str, Job]:
        """Move the chosen jobs that are still queued to ``running`` under this claim's
        ``owner`` (``lease_owner``), with their claim time and recipient count, each with its
        event naming ``worker``."""
        counts = {job_id: recipient_count(payloads[job_id]) for job_id in job_ids}
        claim = (
            update(Job)
            .where(Job.id.in_(job_ids), Job.state == JobState.QUEUED)
            .values(
                state=JobState.RUNNING,
                lease_owner=owner,
                lease_expires_at=expires_at,
                updated_at=now,
                claimed_at=now,
                recipient_count=case(counts, value=Job.id, else_=Job.recipient_count),
            )
            .returning(Job)
            .execution_options(synchronize_session=False)
        )
        claimed = {job.id: job for job in (await session.scalars(claim)).all()}
        for job_id in claimed:
            session.add(
                job_event(
                    self._clock(),
                    job_id,
                    "state",
                    JobState.QUEUED,
                    JobState.RUNNING,
                    worker=worker,
                )
            )
        return claimed

    async def _lock_mailboxes(
        self, session: AsyncSession, now: dt.datetime, limit: int
    ) -> list[Mailbox]:
        """Lock up to ``limit`` connected, unpaused mailboxes below their concurrency that
        have due jobs, in turns between accounts (each account's mailbox with the oldest due
        job first, then every account's second, ...). Each probe of ``jobs`` is one index
        lookup per mailbox, so the scan does not grow with the number of queued jobs."""
        oldest_due = (
            select(func.min(Job.run_after))
            .where(Job.mailbox_id == Mailbox.id, Job.state == JobState.QUEUED)
            .correlate(Mailbox)
            .scalar_subquery()
        )
        running = (
            select(func.count())
            .where(Job.mailbox_id == Mailbox.id, Job.state == JobState.RUNNING)
            .correlate(Mailbox)
            .scalar_subquery()
        )
        waiting = (
            select(Mailbox.id, Mailbox.account_id, oldest_due.label("oldest_due"))
            .where(
                Mailbox.state == MailboxState.CONNECTED,
                or_(Mailbox.paused_until.is_(None), Mailbox.paused_until <= now),
                running < func.coalesce(Mailbox.max_concurrency, self._limits.max_concurrency),
            )
            .subquery("waiting")
        )
        turns = (
            select(
                waiting.c.id,
                waiting.c.oldest_due,
                func.row_number()
                .over(
                    partition_by=waiting.c.account_id,
                    order_by=(waiting.c.oldest_due, waiting.c.id),
                )
                .label("turn"),
            )
            .where(waiting.c.oldest_due <= now)
            .subquery("turns")
        )
        query = (
            select(Mailbox)
            .join(turns, turns.c.id == Mailbox.id)
            .order_by(turns.c.turn, turns.c.oldest_due, Mailbox.id)
            .limit(limit)
            # NO KEY UPDATE: it does not block inserting jobs (their foreign key takes KEY
            # SHARE on this row), but two claimers exclude each other.
            .with_for_update(skip_locked=True, of=Mailbox, key_share=True)
        )
        return list((await session.scalars(query)).all())

    async def _usage(
        self, session: AsyncSession, mailbox_ids: Sequence[str], now: dt.datetime
    ) -> dict[str, MailboxUsage]:
        """Each locked mailbox's running jobs and its claims in the rate and daily windows.

        A statement of its own after the lock: under READ COMMITTED it sees every claim
        committed by the worker that held the lock before us."""
        minute_ago = now - RATE_WINDOW
        day_ago = now - DAILY_WINDOW
        in_minute = Job.claimed_at > minute_ago
        in_day = Job.claimed_at > day_ago
        query = (
            select(
                Job.mailbox_id,
                func.count().filter(Job.state == JobState.RUNNING),
                func.count().filter(in_minute),
                func.coalesce(func.sum(Job.recipient_count).filter(in_day), 0),
                func.min(Job.claimed_at).filter(in_minute),
                func.min(Job.claimed_at).filter(in_day),
            )
            .where(Job.mailbox_id.in_(mailbox_ids), or_(Job.state == JobState.RUNNING, in_day))
            .group_by(Job.mailbox_id)
        )
        usages = dict.fromkeys(mailbox_ids, MailboxUsage())
        for row in (await session.execute(query)).all():
            usages[row[0]] = MailboxUsage(
                running=int(row[1]),
                claimed_last_minute=int(row[2]),
                recipients_last_day=int(row[3]),
                oldest_claim_last_minute=row[4],
                oldest_claim_last_day=row[5],
            )
        return usages

    async def _next_job_ids(
        self, session: AsyncSession, mailbox_id: str, count: int, now: dt.datetime
    ) -> list[str]:
        """The mailbox's next ``count`` due jobs: higher priority first, then the longest
        waiting."""
        query = (
            select(Job.id)
            .where(
                Job.mailbox_id == mailbox_id,
                Job.state == JobState.QUEUED,
                Job.run_after <= now,
            )
            .order_by(Job.priority.desc(), Job.run_after, Job.created_at)
            .limit(count)
        )
        return list((await session.scalars(query)).all())

    async def _payloads(
        self, session: AsyncSession, job_ids: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        if not job_ids:
            return {}
        query = select(JobContent).where(JobContent.job_id.in_(job_ids))
        return {content.job_id: content.payload for content in await session.scalars(query)}

    async def _defer(self, session: AsyncSession, mailbox_id: str, deferred: Deferral) -> None:
        """Skip the mailbox until its capacity returns, so its jobs are not rescanned each
        poll; they stay ``queued``. A later pause already set is kept."""
        await session.execute(
            update(Mailbox)
            .where(
                Mailbox.id == mailbox_id,
                or_(Mailbox.paused_until.is_(None), Mailbox.paused_until < deferred.until),
            )
            .values(paused_until=deferred.until, pause_reason=deferred.reason)
            .execution_options(synchronize_session=False)
        )

    async def hand_back(self, leases: Sequence[Lease]) -> int:
        """Back to ``queued`` at once (lease cleared, ``worker_stopped``): jobs claimed under
        ``leases`` but never started. A job whose lease was lost, or whose request was marked
        in flight, is left alone. Returns how many went back."""
        if not leases:
            return 0
        now = self._clock()
        code = "worker_stopped"
        detail = "the worker stopped before starting the job; it is queued again"
        async with self._sessions.begin() as session:
            handed = (
                await session.scalars(
                    update(Job)
                    .where(
                        _held_under(leases),
                        Job.state == JobState.RUNNING,
                        Job.in_flight_since.is_(None),
                    )
                    .values(
                        state=JobState.QUEUED,
                        lease_owner=None,
                        lease_expires_at=None,
                        updated_at=now,
                        last_error_code=code,
                        last_error_message=detail,
                    )
                    .returning(Job.id)
                )
            ).all()
            workers = {lease.job_id: lease.worker for lease in leases}
            for job_id in handed:
                session.add(
                    job_event(
                        self._clock(),
                        job_id,
                        "state",
                        JobState.RUNNING,
                        JobState.QUEUED,
                        code=code,
                        detail=detail,
                        worker=workers[job_id],
                    )
                )
        return len(handed)

    async def renew_leases(self, leases: Sequence[Lease], duration: dt.timedelta) -> int:
        """Extend ``leases`` to ``duration`` from now, each only while its job is still
        ``running`` under it; returns how many were extended.

        A lease past its expiry is extended too if no recovery has taken the job yet: until
        then nobody else can hold it (only ``start_attempt`` insists on an unexpired lease)."""
        if not leases:
            return 0
        now = self._clock()
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(Job)
                .where(_held_under(leases), Job.state == JobState.RUNNING)
                .values(lease_expires_at=now + duration)
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def start_attempt(self, lease: Lease) -> bool:
        """Record that a provider request is about to leave. False, and nothing written, if
        ``lease`` was lost or has expired: the request must not leave then.

        From here until an outcome is recorded the job is "in flight": a worker that dies
        now leaves the job ``unknown`` rather than risk sending it twice.
        """
        now = self._clock()
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(Job)
                .where(held_by(lease.job_id, lease.owner), Job.lease_expires_at > now)
                .values(in_flight_since=now, attempts=Job.attempts + 1, updated_at=now)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return False
            session.add(
                job_event(
                    self._clock(), lease.job_id, "attempt", code="started", worker=lease.worker
                )
            )
        return True

    async def finish(self, lease: Lease, outcome: Outcome) -> bool:
        """Leave ``running`` for ``outcome.state``; False if ``lease`` was lost (an expired
        lease that no recovery took yet still holds: the outcome is worth more than the
        expiry)."""
        now = self._clock()
        values: dict[str, Any] = {
            "state": outcome.state,
            "lease_owner": None,
            "lease_expires_at": None,
            "in_flight_since": None,
            "updated_at": now,
            "last_error_code": outcome.code,
            "last_error_message": outcome.message,
        }
        if outcome.state in TERMINAL:
            values["finished_at"] = now
        for name in ("provider_message_id", "provider_draft_id", "web_link"):
            if getattr(outcome, name) is not None:
                values[name] = getattr(outcome, name)
        return await self._leave_running(lease, values, outcome)

    async def retry_later(
        self, lease: Lease, run_after: dt.datetime, outcome: Outcome, *, failure: bool
    ) -> bool:
        """Back to ``queued`` until ``run_after``; ``failure`` counts it toward the retry limit."""
        values: dict[str, Any] = {
            "state": JobState.QUEUED,
            "run_after": run_after,
            "lease_owner": None,
            "lease_expires_at": None,
            "in_flight_since": None,
            "updated_at": self._clock(),
            "last_error_code": outcome.code,
            "last_error_message": outcome.message,
        }
        if failure:
            values["transient_failures"] = Job.transient_failures + 1
        return await self._leave_running(lease, values, outcome)

    async def _leave_running(self, lease: Lease, values: dict[str, Any], outcome: Outcome) -> bool:
        async with self._sessions.begin() as session:
            job = (
                await session.scalars(
                    update(Job)
                    .where(held_by(lease.job_id, lease.owner))
                    .values(**values)
                    .returning(Job)
                )
            ).one_or_none()
            if job is None:
                return False
            session.add(
                job_event(
                    self._clock(),
                    lease.job_id,
                    "state",
                    JobState.RUNNING,
                    str(values["state"]),
                    code=outcome.code,
                    detail=outcome.message,
                    provider_status=outcome.provider_status,
                    worker=lease.worker,
                )
            )
            announce(session, job, str(values["state"]), outcome.code, self._clock())
        return True

    async def record_provider_ids(self, lease: Lease, outcome: Outcome) -> bool:
        """Persist ids the provider returned before the job's final transition (resume aid)."""
        values = {
            name: getattr(outcome, name)
            for name in ("provider_message_id", "provider_draft_id", "web_link")
            if getattr(outcome, name) is not None
        }
        if not values:
            return True
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(Job).where(held_by(lease.job_id, lease.owner)).values(**values)
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def hold(self, lease: Lease, code: str, message: str) -> bool:
        """A running job whose mailbox lost its grant waits in ``held``."""
        values: dict[str, Any] = {
            "state": JobState.HELD,
            "lease_owner": None,
            "lease_expires_at": None,
            "in_flight_since": None,
            "updated_at": self._clock(),
            "last_error_code": code,
            "last_error_message": message,
        }
        return await self._leave_running(lease, values, Outcome(JobState.HELD, code, message))

    async def recover_expired_leases(self) -> tuple[int, int]:
        """Jobs whose worker vanished: back to ``queued`` if no request was in flight,
        otherwise ``unknown`` (the request may have reached the provider).

        Returns ``(requeued, unknown)``.
        """
        now = self._clock()
        expired = and_(Job.state == JobState.RUNNING, Job.lease_expires_at < now)
        requeued = await self._recover(
            and_(expired, Job.in_flight_since.is_(None)),
            {"state": JobState.QUEUED, "run_after": now},
            JobState.QUEUED,
            "lease_expired",
            "the worker stopped before calling the provider; the job will be retried",
        )
        unknown = await self._recover(
            and_(expired, Job.in_flight_since.is_not(None)),
            {"state": JobState.UNKNOWN, "finished_at": now},
            JobState.UNKNOWN,
            "worker_lost",
            "the worker stopped while the provider request was in flight; the message may "
            "or may not have been sent",
        )
        return requeued, unknown

    async def _recover(
        self,
        where: ColumnElement[bool],
        values: dict[str, Any],
        to_state: str,
        code: str,
        detail: str,
    ) -> int:
        now = self._clock()
        async with self._sessions.begin() as session:
            jobs = list(
                await session.scalars(select(Job).where(where).with_for_update(skip_locked=True))
            )
            if not jobs:
                return 0
            ids = [job.id for job in jobs]
            await session.execute(
                update(Job)
                .where(Job.id.in_(ids), Job.state == JobState.RUNNING)
                .values(
                    lease_owner=None,
                    lease_expires_at=None,
                    in_flight_since=None,
                    updated_at=now,
                    last_error_code=code,
                    last_error_message=detail,
                    **values,
                )
                .execution_options(synchronize_session=False)
            )
            for job in jobs:
                session.add(
                    job_event(
                        self._clock(),
                        job.id,
                        "state",
                        JobState.RUNNING,
                        to_state,
                        code=code,
                        detail=detail,
                    )
                )
                announce(session, job, to_state, code, now)
        return len(jobs)

    async def fail_past_deadline(self) -> int:
        """Queued or held jobs whose deadline passed become ``failed`` (deadline_exceeded)."""
        now = self._clock()
        async with self._sessions.begin() as session:
            return await move_each(
                session,
                and_(Job.state.in_([JobState.QUEUED, JobState.HELD]), Job.deadline < now),
                JobState.FAILED,
                "deadline_exceeded",
                "the job's deadline passed before it could be sent",
                now,
            )

    async def hold_for_mailbox(self, mailbox_id: str, code: str, message: str) -> int:
        """Queued jobs of a mailbox that needs consent wait in ``held``, with ``code`` and
        ``message`` (why the mailbox needs consent) as their last error."""
        async with self._sessions.begin() as session:
            return await move_each(
                session,
                and_(Job.mailbox_id == mailbox_id, Job.state == JobState.QUEUED),
                JobState.HELD,
                code,
                message,
                self._clock(),
            )


def _held_under(leases: Sequence[Lease]) -> ColumnElement[bool]:
    """The job is one of ``leases``' and its ``lease_owner`` is that lease's."""
    by_owner: dict[str, list[str]] = {}
    for lease in leases:
        by_owner.setdefault(lease.owner, []).append(lease.job_id)
    return or_(
        *(and_(Job.lease_owner == owner, Job.id.in_(ids)) for owner, ids in by_owner.items())
    )


__all__ = ["ClaimedJob", "JobQueue", "Lease", "lease_owner"]
