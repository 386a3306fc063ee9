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

The claimed jobs' writes (``start_attempt``, ``finish``, ``retry_later``, ``hold``) are each
one guarded write per job, gathered with the other jobs' that arrive at about the same time
into one batch (``jobs/coalescing.py``, ``jobs/job_writes.py``): one statement and one
transaction per batch on PostgreSQL, one transaction on SQLite. Each job is still answered for
itself (False: its lease was lost, nothing written for it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, case, func, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from mailbox_worker.clock import Clock, utcnow
from mailbox_worker.db.models import Job, keyed_state
from mailbox_worker.jobs import job_writes
from mailbox_worker.jobs.claims import ClaimBatch, ClaimedJob, Claims, Lease, lease_owner
from mailbox_worker.jobs.coalescing import Coalescer
from mailbox_worker.jobs.limits import LimitDefaults
from mailbox_worker.jobs.transitions import Outcome, announce, job_event, move_each
from mailbox_worker.states import JobState

T = TypeVar("T")
W = TypeVar("W", job_writes.Start, job_writes.Leave)


@dataclass(frozen=True)
class QueueSample:
    """What the queue looks like now, for the worker's gauges (``JobQueue.sample``)."""

    counts: dict[str, int]
    """Jobs in each state, every ``JobState`` present (0 when none)."""
    oldest_due_queued: float
    """Seconds since the oldest due ``queued`` job became due (``run_after``); 0 if none."""
    oldest_running: float
    """Seconds since the oldest ``running`` job was claimed; 0 if none."""


class JobQueue:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock = utcnow,
        limits: LimitDefaults | None = None,
        *,
        transaction_pooler: bool = False,
    ) -> None:
        """``limits``: what applies to mailboxes without limits of their own.
        ``transaction_pooler``: the database is reached through a pooler in transaction mode
        (``database.transaction_pooler``), where a statement outside a transaction may have its
        parse and its execution sent to different servers: every write then runs in one."""
        self._sessions = sessions
        self._clock = clock
        self._claims = Claims(limits or LimitDefaults(), clock)
        engine = sessions.kw["bind"]
        assert isinstance(engine, AsyncEngine), "JobQueue needs sessions bound to an engine"
        # A single-statement write needs no explicit transaction on PostgreSQL: its own,
        # implicit one saves the BEGIN and COMMIT round-trips (docs/architecture.md).
        self._engine = engine
        postgresql = engine.dialect.name == "postgresql"
        self._autocommit_writes = postgresql and not transaction_pooler
        self._autocommit = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if self._autocommit_writes
            else engine
        )
        self._starts: Coalescer[job_writes.Start, bool] = Coalescer(
            lambda starts: self._write(job_writes.start, starts), key=_job_of
        )
        self._leaves: Coalescer[job_writes.Leave, bool] = Coalescer(
            lambda leaves: self._write(job_writes.leave_running, leaves), key=_job_of
        )

    async def _write(
        self,
        write: Callable[[AsyncConnection, Sequence[W]], Awaitable[list[bool]]],
        items: Sequence[W],
    ) -> list[bool]:
        """One batch of job writes on one write connection, retried once on a dropped one."""

        async def attempt() -> list[bool]:
            async with self._write_connection() as connection:
                return await write(connection, items)

        return await self._retrying(attempt)

    @asynccontextmanager
    async def _write_connection(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one job write: autocommit on PostgreSQL (the write is one
        statement), a transaction otherwise (``BEGIN IMMEDIATE`` on SQLite; behind a
        transaction pooler, where only a transaction keeps one server connection)."""
        async with self._autocommit.connect() as connection:
            if self._autocommit_writes:
                yield connection
                return
            async with connection.begin():
                yield connection

    async def _retrying(self, work: Callable[[], Awaitable[T]]) -> T:
        """``work()``, run again once if it failed on a connection the database had dropped
        (a restart or a network cut since the pool last used it): the engine does not ping a
        connection at each checkout (``db/engine.py``), so the first use after a drop is
        where it shows, and the pool has then discarded every connection opened before."""
        try:
            return await work()
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
        return await work()

    async def count_by_state(self) -> dict[str, int]:
        """Jobs in each state, every ``JobState`` present (0 when none)."""
        return (await self.sample()).counts

    async def sample(self) -> QueueSample:
        """Counts by state and the oldest waiting jobs' ages, in one aggregate query (a scan
        of the job table, as the count always was). A due job of a paused mailbox counts as
        waiting: it is."""
        now = self._clock()
        due = and_(Job.state == JobState.QUEUED, Job.run_after <= now)
        query = select(
            Job.state,
            func.count(),
            func.min(case((due, Job.run_after))),
            func.min(case((Job.state == JobState.RUNNING, Job.claimed_at))),
        ).group_by(Job.state)
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        counts: dict[str, int] = dict.fromkeys(JobState, 0)
        oldest: dict[str, dt.datetime] = {}
        for state, count, due_since, claimed_since in rows:
            counts[state] = int(count)
            since = due_since if state == JobState.QUEUED else claimed_since
            if since is not None:
                oldest[state] = since
        return QueueSample(
            counts=counts,
            oldest_due_queued=_age(now, oldest.get(JobState.QUEUED)),
            oldest_running=_age(now, oldest.get(JobState.RUNNING)),
        )

    async def claim(self, worker: str, limit: int, lease: dt.timedelta) -> list[ClaimedJob]:
        """Lease at most ``limit`` due jobs of connected mailboxes to ``worker``, each under a
        ``Lease`` of this claim, in one transaction (``Claims.claim``)."""
        return (await self.claim_batch(worker, limit, lease)).jobs

    async def claim_batch(self, worker: str, limit: int, lease: dt.timedelta) -> ClaimBatch:
        """``claim``, and whether claiming again at once could find more
        (``ClaimBatch.more``).

        On PostgreSQL the claim is one statement in its own implicit transaction: once sent,
        it commits whatever happens to the caller. A claim whose answer is lost (the caller
        cancelled, the connection dropped after the server ran it) leaves its jobs ``running``
        under a lease no one holds until it expires (``worker.lease_seconds``); recovery then
        requeues them (no request left for them). The worker does not cancel a claim when it
        stops: it finishes its pass first."""
        if limit <= 0:
            return ClaimBatch([], more=False)

        async def claim() -> ClaimBatch:
            # The write connection: PostgreSQL's claim is one statement outside an explicit
            # transaction, SQLite's runs in its BEGIN IMMEDIATE (``Claims.claim`` picks).
            async with self._write_connection() as connection:
                return await self._claims.claim(connection, worker, limit, lease, self._clock())

        return await self._retrying(claim)

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
                        keyed_state() == JobState.RUNNING,
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
                .where(_held_under(leases), keyed_state() == JobState.RUNNING)
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
        return await self._starts.submit(
            job_writes.Start(lease.job_id, lease.owner, lease.worker, now, self._clock())
        )

    async def finish(self, lease: Lease, outcome: Outcome) -> bool:
        """Leave ``running`` for ``outcome.state``; False if ``lease`` was lost (an expired
        lease that no recovery took yet still holds: the outcome is worth more than the
        expiry)."""
        values = job_writes.leave_values(
            state=outcome.state,
            now=self._clock(),
            code=outcome.code,
            message=outcome.message,
            provider_message_id=outcome.provider_message_id,
            provider_draft_id=outcome.provider_draft_id,
            web_link=outcome.web_link,
        )
        return await self._leave_running(lease, values, outcome)

    async def retry_later(
        self, lease: Lease, run_after: dt.datetime, outcome: Outcome, *, failure: bool
    ) -> bool:
        """Back to ``queued`` until ``run_after``; ``failure`` counts it toward the retry limit."""
        values = job_writes.leave_values(
            state=JobState.QUEUED,
            now=self._clock(),
            code=outcome.code,
            message=outcome.message,
            run_after=run_after,
            failure=failure,
        )
        return await self._leave_running(lease, values, outcome)

    async def _leave_running(self, lease: Lease, values: dict[str, Any], outcome: Outcome) -> bool:
        """One write (``job_writes.leave_running``): the guarded update, its event and its
        outbox event, sent with the other jobs' that arrive meanwhile."""

        return await self._leaves.submit(
            job_writes.Leave(
                lease.job_id,
                lease.owner,
                values,
                lease.worker,
                outcome.provider_status,
                self._clock(),
            )
        )

    async def record_provider_ids(self, lease: Lease, outcome: Outcome) -> bool:
        """Persist ids the provider returned before the job's final transition (resume aid)."""
        values = {
            name: getattr(outcome, name)
            for name in ("provider_message_id", "provider_draft_id", "web_link")
            if getattr(outcome, name) is not None
        }
        if not values:
            return True

        async def record() -> bool:
            async with self._write_connection() as connection:
                return await job_writes.record_ids(
                    connection,
                    lease.job_id,
                    lease.owner,
                    outcome.provider_message_id,
                    outcome.provider_draft_id,
                    outcome.web_link,
                )

        return await self._retrying(record)

    async def hold(self, lease: Lease, code: str, message: str) -> bool:
        """A running job whose mailbox lost its grant waits in ``held``."""
        values = job_writes.leave_values(
            state=JobState.HELD, now=self._clock(), code=code, message=message
        )
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
                .where(Job.id.in_(ids), keyed_state() == JobState.RUNNING)
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


def _job_of(write: job_writes.Start | job_writes.Leave) -> str:
    return write.job_id


def _held_under(leases: Sequence[Lease]) -> ColumnElement[bool]:
    """The job is one of ``leases``' and its ``lease_owner`` is that lease's."""
    by_owner: dict[str, list[str]] = {}
    for lease in leases:
        by_owner.setdefault(lease.owner, []).append(lease.job_id)
    return or_(
        *(and_(Job.lease_owner == owner, Job.id.in_(ids)) for owner, ids in by_owner.items())
    )


__all__ = ["ClaimedJob", "JobQueue", "Lease", "lease_owner"]


def _age(now: dt.datetime, since: dt.datetime | None) -> float:
    """Seconds from ``since`` to ``now``; 0 for none (and for a clock that went back)."""
    return 0.0 if since is None else max((now - since).total_seconds(), 0.0)
