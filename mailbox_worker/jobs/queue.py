"""The worker's side of the job table, ``JobQueue``: claim due jobs under a lease, renew and
hand back leases, mark a provider request in flight, record what came of it, and recover the
jobs of workers that vanished.

A worker's updates check ``lease_owner`` (``transitions.held_by``): a worker that lost its
lease cannot overwrite what another recorded. Claiming uses ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL; SQLite's single writer serialises it. Transitions are described in
``jobs/transitions.py`` and docs/architecture.md#job-states.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailbox_worker.clock import Clock, utcnow
from mailbox_worker.db.models import Job, JobContent, Mailbox
from mailbox_worker.jobs.transitions import Outcome, announce, held_by, job_event, move_each
from mailbox_worker.states import TERMINAL, JobState, MailboxState


@dataclass(frozen=True)
class ClaimedJob:
    job: Job
    payload: dict[str, Any]


class JobQueue:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock = utcnow) -> None:
        self._sessions = sessions
        self._clock = clock

    async def count_by_state(self) -> dict[str, int]:
        query = select(Job.state, func.count()).group_by(Job.state)
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        counts: dict[str, int] = dict.fromkeys(JobState, 0)
        counts.update({state: int(count) for state, count in rows})
        return counts

    async def claim(self, worker: str, limit: int, lease: dt.timedelta) -> list[ClaimedJob]:
        """Lease at most ``limit`` due jobs of connected mailboxes to ``worker``, oldest first."""
        if limit <= 0:
            return []
        now = self._clock()
        due = (
            select(Job.id)
            .join(Mailbox, Mailbox.id == Job.mailbox_id)
            .where(
                Job.state == JobState.QUEUED,
                Job.run_after <= now,
                Mailbox.state == MailboxState.CONNECTED,
            )
            .order_by(Job.run_after, Job.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True, of=Job)
            # MATERIALIZED: run once. Inlined as `id IN (subquery)`, PostgreSQL may re-run the
            # LIMIT … SKIP LOCKED subquery per outer row, and each run skips the rows the last
            # one locked, so one claim could take every due job.
            .cte("due")
            .prefix_with("MATERIALIZED")
        )
        claim = (
            update(Job)
            .where(Job.id == due.c.id, Job.state == JobState.QUEUED)
            .values(
                state=JobState.RUNNING,
                lease_owner=worker,
                lease_expires_at=now + lease,
                updated_at=now,
            )
            .returning(Job)
        )
        async with self._sessions.begin() as session:
            jobs = list((await session.scalars(claim)).all())
            if not jobs:
                return []
            contents = await session.scalars(
                select(JobContent).where(JobContent.job_id.in_([job.id for job in jobs]))
            )
            payloads = {content.job_id: content.payload for content in contents}
            for job in jobs:
                session.add(
                    job_event(
                        self._clock(),
                        job.id,
                        "state",
                        JobState.QUEUED,
                        JobState.RUNNING,
                        worker=worker,
                    )
                )
        return [ClaimedJob(job, payloads[job.id]) for job in jobs if job.id in payloads]

    async def hand_back(self, worker: str, job_ids: Sequence[str]) -> int:
        """Back to ``queued`` at once (lease cleared, ``worker_stopped``): jobs ``worker``
        claimed but never started. A job it no longer holds, or whose request was marked in
        flight, is left alone. Returns how many went back."""
        if not job_ids:
            return 0
        now = self._clock()
        code = "worker_stopped"
        detail = "the worker stopped before starting the job; it is queued again"
        async with self._sessions.begin() as session:
            handed = (
                await session.scalars(
                    update(Job)
                    .where(
                        Job.id.in_(job_ids),
                        Job.state == JobState.RUNNING,
                        Job.lease_owner == worker,
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
                        worker=worker,
                    )
                )
        return len(handed)

    async def renew_leases(self, worker: str, job_ids: Sequence[str], lease: dt.timedelta) -> int:
        """Extend the leases ``worker`` still holds; returns how many it still holds."""
        if not job_ids:
            return 0
        now = self._clock()
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(Job)
                .where(
                    Job.id.in_(job_ids), Job.state == JobState.RUNNING, Job.lease_owner == worker
                )
                .values(lease_expires_at=now + lease)
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def start_attempt(self, job_id: str, worker: str) -> bool:
        """Record that a provider request is about to leave. False if the lease was lost.

        From here until an outcome is recorded the job is "in flight": a worker that dies
        now leaves the job ``unknown`` rather than risk sending it twice.
        """
        now = self._clock()
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(Job)
                .where(held_by(job_id, worker))
                .values(in_flight_since=now, attempts=Job.attempts + 1, updated_at=now)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return False
            session.add(job_event(self._clock(), job_id, "attempt", code="started", worker=worker))
        return True

    async def finish(self, job_id: str, worker: str, outcome: Outcome) -> bool:
        """Leave ``running`` for ``outcome.state``; False if ``worker`` no longer holds the job."""
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
        return await self._leave_running(job_id, worker, values, outcome)

    async def retry_later(
        self, job_id: str, worker: str, run_after: dt.datetime, outcome: Outcome, *, failure: bool
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
        return await self._leave_running(job_id, worker, values, outcome)

    async def _leave_running(
        self, job_id: str, worker: str, values: dict[str, Any], outcome: Outcome
    ) -> bool:
        async with self._sessions.begin() as session:
            job = (
                await session.scalars(
                    update(Job).where(held_by(job_id, worker)).values(**values).returning(Job)
                )
            ).one_or_none()
            if job is None:
                return False
            session.add(
                job_event(
                    self._clock(),
                    job_id,
                    "state",
                    JobState.RUNNING,
                    str(values["state"]),
                    code=outcome.code,
                    detail=outcome.message,
                    provider_status=outcome.provider_status,
                    worker=worker,
                )
            )
            announce(session, job, str(values["state"]), outcome.code, self._clock())
        return True

    async def record_provider_ids(self, job_id: str, worker: str, outcome: Outcome) -> bool:
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
                update(Job).where(held_by(job_id, worker)).values(**values)
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def hold(self, job_id: str, worker: str, code: str, message: str) -> bool:
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
        return await self._leave_running(
            job_id, worker, values, Outcome(JobState.HELD, code, message)
        )

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


__all__ = ["ClaimedJob", "JobQueue"]
