"""The job store, ``JobStore``: every job query in one place, on SQLite and PostgreSQL alike.

Job states (``states.JobState``, docs/architecture.md#job-states): ``queued → running → sent |
drafted``; ``running → queued`` (retry); ``running → failed``; ``queued|running → held``
(mailbox needs consent) ``→ queued``; ``queued|held → cancelled``; ``running → unknown``;
``unknown → sent | queued | cancelled`` only when a client or operator settles it.
Every transition is one guarded ``UPDATE … WHERE state IN (…)`` plus one ``job_events`` row
in the same transaction, so a transition happens at most once even when two workers race.
Every transition writes ``last_error_code`` and ``last_error_message`` together (both set,
or both cleared), so a job never shows one attempt's code beside another's message. A
worker's updates also check ``lease_owner``: a worker that lost its lease cannot overwrite
what another recorded. Claiming uses ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's
single writer serialises it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailbox_worker.clock import Clock, new_id, utcnow
from mailbox_worker.db.accounts import audit_row
from mailbox_worker.db.models import Job, JobContent, JobEvent, Mailbox
from mailbox_worker.errors import Conflict
from mailbox_worker.events.outbox import outbox_row
from mailbox_worker.states import CANCELLABLE, TERMINAL, JobState, MailboxState


@dataclass(frozen=True)
class NewJob:
    account_id: str
    mailbox_id: str
    mode: str
    payload: dict[str, Any]
    request_sha256: str
    message_id_domain: str
    idempotency_key: str | None = None
    reference: str | None = None
    deadline: dt.datetime | None = None
    held: bool = False


@dataclass(frozen=True)
class ClaimedJob:
    job: Job
    payload: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """What to record when a job leaves ``running``.

    ``code`` and ``message`` go together: both given (the message explains that code), or
    both None (the transition clears the job's last error). Anything else is a ``ValueError``.
    """

    state: JobState
    code: str | None = None
    message: str | None = None
    provider_status: int | None = None
    provider_message_id: str | None = None
    provider_draft_id: str | None = None
    web_link: str | None = None

    def __post_init__(self) -> None:
        if (self.code is None) != (self.message is None):
            raise ValueError("an outcome's code and message are given together or not at all")


@dataclass(frozen=True)
class Settlement:
    """How a client or operator settles an ``unknown`` job (docs/architecture.md#job-states)."""

    name: str
    """``resolve``, ``retry`` or ``cancel``: the ``settlement`` of the ``job.settled`` event."""
    state: JobState
    code: str
    message: str


RESOLVE = Settlement(
    "resolve",
    JobState.SENT,
    "resolved_as_sent",
    "the client confirmed that the message arrived; the job was settled as sent",
)
RETRY = Settlement(
    "retry",
    JobState.QUEUED,
    "retried_accepting_duplicate_risk",
    "the client asked to send the job again, accepting that the message may arrive twice",
)
CANCEL_UNKNOWN = Settlement(
    "cancel",
    JobState.CANCELLED,
    "cancelled_by_client",
    "the client cancelled the job whose outcome was unknown",
)
SETTLEMENTS: dict[str, Settlement] = {s.name: s for s in (RESOLVE, RETRY, CANCEL_UNKNOWN)}
JOB_SETTLED = "job.settled"
"""The outbox event (and audit action) announcing that an ``unknown`` job was settled."""


def message_id_for(job_id: str, domain: str) -> str:
    """The deterministic ``Message-ID`` of a job's message: the same on every attempt."""
    return f"<{job_id}@{domain}>"


class JobStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock = utcnow) -> None:
        self._sessions = sessions
        self._clock = clock

    # -- enqueue and read ---------------------------------------------------------------

    async def enqueue(self, new: NewJob) -> tuple[Job, bool]:
        """Commit a job (and its content) and return ``(job, created)``.

        With an idempotency key already used by the account, returns the first job and
        ``created=False`` when the request is the same, and raises ``Conflict`` otherwise.
        """
        if new.idempotency_key is not None:
            existing = await self._by_idempotency_key(new.account_id, new.idempotency_key)
            if existing is not None:
                return self._replay(existing, new), False
        now = self._clock()
        job_id = new_id("job")
        state = JobState.HELD if new.held else JobState.QUEUED
        job = Job(
            id=job_id,
            account_id=new.account_id,
            mailbox_id=new.mailbox_id,
            mode=new.mode,
            state=state,
            reference=new.reference,
            idempotency_key=new.idempotency_key,
            request_sha256=new.request_sha256,
            message_id=message_id_for(job_id, new.message_id_domain),
            attempts=0,
            transient_failures=0,
            run_after=now,
            deadline=new.deadline,
            created_at=now,
            updated_at=now,
        )
        try:
            async with self._sessions.begin() as session:
                session.add(job)
                await session.flush()
                session.add(JobContent(job_id=job_id, payload=new.payload))
                session.add(self._event(job_id, "state", None, state, code="enqueued"))
        except IntegrityError:
            if new.idempotency_key is None:
                raise
            existing = await self._by_idempotency_key(new.account_id, new.idempotency_key)
            if existing is None:
                raise
            return self._replay(existing, new), False
        return job, True

    async def replay(self, account_id: str, key: str, request_sha256: str) -> Job | None:
        """The job first enqueued under ``key`` (None if none): ``Conflict`` when it was
        enqueued by a different request."""
        existing = await self._by_idempotency_key(account_id, key)
        if existing is not None and existing.request_sha256 != request_sha256:
            raise Conflict(
                "this Idempotency-Key was already used for a different request",
                code="idempotency_key_reused",
            )
        return existing

    @staticmethod
    def _replay(existing: Job, new: NewJob) -> Job:
        if existing.request_sha256 != new.request_sha256:
            raise Conflict(
                "this Idempotency-Key was already used for a different request",
                code="idempotency_key_reused",
            )
        return existing

    async def _by_idempotency_key(self, account_id: str, key: str) -> Job | None:
        query = select(Job).where(Job.account_id == account_id, Job.idempotency_key == key)
        async with self._sessions() as session:
            return (await session.scalars(query)).one_or_none()

    async def get(self, job_id: str, account_id: str | None = None) -> Job | None:
        """The job, or None when it does not exist or belongs to another account."""
        async with self._sessions() as session:
            job = await session.get(Job, job_id)
        if job is None or (account_id is not None and job.account_id != account_id):
            return None
        return job

    async def events(self, job_id: str) -> list[JobEvent]:
        query = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
        async with self._sessions() as session:
            return list((await session.scalars(query)).all())

    async def payload(self, job_id: str) -> dict[str, Any] | None:
        async with self._sessions() as session:
            content = await session.get(JobContent, job_id)
        return None if content is None else content.payload

    async def count_by_state(self) -> dict[str, int]:
        query = select(Job.state, func.count()).group_by(Job.state)
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        counts: dict[str, int] = dict.fromkeys(JobState, 0)
        counts.update({state: int(count) for state, count in rows})
        return counts

    # -- the worker's side ----------------------------------------------------------------

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
                    self._event(job.id, "state", JobState.QUEUED, JobState.RUNNING, worker=worker)
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
                    self._event(
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
                .where(_held_by(job_id, worker))
                .values(in_flight_since=now, attempts=Job.attempts + 1, updated_at=now)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return False
            session.add(self._event(job_id, "attempt", code="started", worker=worker))
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
            result = await session.execute(
                update(Job).where(_held_by(job_id, worker)).values(**values)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return False
            session.add(
                self._event(
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
                update(Job).where(_held_by(job_id, worker)).values(**values)
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

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
            ids = list(
                (
                    await session.scalars(
                        select(Job.id).where(where).with_for_update(skip_locked=True)
                    )
                ).all()
            )
            if not ids:
                return 0
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
            )
            for job_id in ids:
                session.add(
                    self._event(
                        job_id, "state", JobState.RUNNING, to_state, code=code, detail=detail
                    )
                )
        return len(ids)

    async def fail_past_deadline(self) -> int:
        """Queued or held jobs whose deadline passed become ``failed`` (deadline_exceeded)."""
        now = self._clock()
        return await self._move_each(
            and_(Job.state.in_([JobState.QUEUED, JobState.HELD]), Job.deadline < now),
            JobState.FAILED,
            "deadline_exceeded",
            "the job's deadline passed before it could be sent",
            now,
        )

    # -- mailbox-wide and client actions ----------------------------------------------------

    async def hold_for_mailbox(self, mailbox_id: str, code: str, message: str) -> int:
        """Queued jobs of a mailbox that needs consent wait in ``held``, with ``code`` and
        ``message`` (why the mailbox needs consent) as their last error."""
        return await self._move_for_mailbox(
            mailbox_id, [JobState.QUEUED], JobState.HELD, code, message
        )

    async def release_held(self, mailbox_id: str) -> int:
        """Held jobs of a reconnected mailbox go back to ``queued`` (``mailbox_reconnected``)."""
        return await self._move_for_mailbox(
            mailbox_id,
            [JobState.HELD],
            JobState.QUEUED,
            "mailbox_reconnected",
            "the mailbox was connected again; the job is queued to be sent",
        )

    async def cancel_pending_for_mailbox(self, mailbox_id: str, code: str, message: str) -> int:
        """Queued and held jobs of a mailbox become ``cancelled`` with ``code`` and
        ``message`` as their last error (e.g. ``mailbox_disconnected``)."""
        return await self._move_for_mailbox(
            mailbox_id, [JobState.QUEUED, JobState.HELD], JobState.CANCELLED, code, message
        )

    async def _move_for_mailbox(
        self, mailbox_id: str, from_states: list[str], to_state: str, code: str, message: str
    ) -> int:
        return await self._move_each(
            and_(Job.mailbox_id == mailbox_id, Job.state.in_(from_states)),
            to_state,
            code,
            message,
            self._clock(),
        )

    async def _move_each(
        self,
        where: ColumnElement[bool],
        to_state: str,
        code: str,
        message: str,
        now: dt.datetime,
    ) -> int:
        """Move each job matching ``where`` (rows another transaction holds are skipped) from
        the state it is in to ``to_state``, with ``code`` and ``message`` as its last error:
        one update guarded by that state and one event a job. Returns how many."""
        terminal = {"finished_at": now} if to_state in TERMINAL else {}
        async with self._sessions.begin() as session:
            rows = (
                await session.execute(
                    select(Job.id, Job.state).where(where).with_for_update(skip_locked=True)
                )
            ).all()
            for job_id, state in rows:
                await session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.state == state)
                    .values(
                        state=to_state,
                        updated_at=now,
                        last_error_code=code,
                        last_error_message=message,
                        **terminal,
                    )
                )
                session.add(
                    self._event(job_id, "state", state, to_state, code=code, detail=message)
                )
        return len(rows)

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

    async def cancel(self, job_id: str, account_id: str, actor: str) -> Job | None:
        """Cancel a queued or held job of ``account_id``.

        Returns the job as it now is (unchanged if it had already left ``queued``/``held``),
        or None if the account has no such job.
        """
        now = self._clock()
        async with self._sessions.begin() as session:
            job = (
                await session.scalars(
                    select(Job)
                    .where(Job.id == job_id, Job.account_id == account_id)
                    .with_for_update()
                )
            ).one_or_none()
            if job is None:
                return None
            if job.state in CANCELLABLE:
                previous = job.state
                job.state = JobState.CANCELLED
                job.finished_at = now
                job.updated_at = now
                job.last_error_code = "cancelled_by_client"
                job.last_error_message = "the client cancelled the job before it was sent"
                session.add(
                    self._event(
                        job_id,
                        "state",
                        previous,
                        JobState.CANCELLED,
                        code="cancelled_by_client",
                        detail=actor,
                    )
                )
        return job

    async def settle_unknown(
        self, job_id: str, settlement: Settlement, actor: str, account_id: str | None = None
    ) -> tuple[Job, bool] | None:
        """Move an ``unknown`` job to ``settlement.state``: ``(job as it now is, True)``.

        ``(job unchanged, False)`` when the job is not ``unknown`` (another settlement won, or
        it never was); None when no such job (of ``account_id``, when given) exists. One
        guarded update, with the job event, an audit entry by ``actor`` and the ``job.settled``
        outbox event committed together. A retry queues the job at once with a fresh budget
        of transient failures.
        """
        now = self._clock()
        values: dict[str, Any] = {
            "state": settlement.state,
            "updated_at": now,
            "last_error_code": settlement.code,
            "last_error_message": settlement.message,
        }
        if settlement.state == JobState.QUEUED:
            values.update(finished_at=None, run_after=now, transient_failures=0)
        else:
            values["finished_at"] = now
        owned = Job.id == job_id
        if account_id is not None:
            owned = and_(owned, Job.account_id == account_id)
        async with self._sessions.begin() as session:
            job = (
                await session.scalars(
                    update(Job)
                    .where(owned, Job.state == JobState.UNKNOWN)
                    .values(**values)
                    .returning(Job)
                )
            ).one_or_none()
            if job is None:
                current = (await session.scalars(select(Job).where(owned))).one_or_none()
                return None if current is None else (current, False)
            data = {"job_id": job.id, "mailbox_id": job.mailbox_id, "state": settlement.state}
            session.add_all(
                [
                    self._event(
                        job.id,
                        "state",
                        JobState.UNKNOWN,
                        settlement.state,
                        code=settlement.code,
                        detail=actor,
                    ),
                    audit_row(
                        actor,
                        job.account_id,
                        JOB_SETTLED,
                        job.id,
                        {"settlement": settlement.name, "state": settlement.state}
                        | ({"accept_duplicate_risk": True} if settlement is RETRY else {}),
                        now,
                    ),
                    outbox_row(
                        job.account_id,
                        JOB_SETTLED,
                        data | {"settlement": settlement.name, "code": settlement.code},
                        now,
                    ),
                ]
            )
        return job, True

    def _event(
        self,
        job_id: str,
        kind: str,
        from_state: str | None = None,
        to_state: str | None = None,
        *,
        code: str | None = None,
        detail: str | None = None,
        provider_status: int | None = None,
        worker: str | None = None,
    ) -> JobEvent:
        return JobEvent(
            job_id=job_id,
            at=self._clock(),
            kind=kind,
            from_state=from_state,
            to_state=to_state,
            code=code,
            detail=detail,
            provider_status=provider_status,
            worker=worker,
        )


def _held_by(job_id: str, worker: str) -> ColumnElement[bool]:
    return and_(Job.id == job_id, Job.state == JobState.RUNNING, Job.lease_owner == worker)


__all__ = [
    "CANCEL_UNKNOWN",
    "JOB_SETTLED",
    "RESOLVE",
    "RETRY",
    "SETTLEMENTS",
    "ClaimedJob",
    "JobStore",
    "NewJob",
    "Outcome",
    "Settlement",
    "message_id_for",
]
