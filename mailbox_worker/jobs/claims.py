"""How a claim picks and leases jobs (``Claims``), and the ``Lease`` each claim takes.

A claim keeps every mailbox within its limits across every worker and takes turns between
accounts (docs/architecture.md#mailbox-limits); the rules themselves are pure functions in
``jobs/limits.py``. Every claim's lease is its own: ``lease_owner`` is the worker's name plus a
random suffix, and every later update of the job checks it (``jobs/queue.py``).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    CTE,
    Integer,
    Select,
    String,
    bindparam,
    column,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from mailbox_worker.clock import Clock, new_id
from mailbox_worker.db.models import (
    Account,
    Job,
    JobContent,
    JobEvent,
    Mailbox,
    MailboxClaimHour,
    UTCDateTime,
    keyed_state,
    untracked,
)
from mailbox_worker.jobs.claim_sql import (
    CLAIM,
    COUNTS_AT,
    JOB_COLUMNS,
    MAILBOX_COLUMNS,
    PAYLOAD_AT,
)
from mailbox_worker.jobs.limits import (
    DAILY_WINDOW,
    RATE_WINDOW,
    Deferral,
    LimitDefaults,
    MailboxLimits,
    MailboxUsage,
    allowance,
    claim_room,
    claim_share,
    deferral,
    effective_limits,
    mailboxes_to_lock,
    recipient_count,
    round_robin,
    within_daily_cap,
)
from mailbox_worker.states import JobState, MailboxState

OWNER_LENGTH = 80
"""The width of ``jobs.lease_owner`` (``String(80)``)."""
SUFFIX_BYTES = 6
HOUR = dt.timedelta(hours=1)
"""The daily window's whole hours are read from ``mailbox_claim_hours`` (migration 0022)."""


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


@dataclass
class ClaimedJob:
    """A leased job and its message (the enqueue request's ``message``, as stored)."""

    job: Job
    payload: dict[str, Any]
    lease: Lease
    mailbox: Mailbox
    """The job's mailbox as the claim read it, under the lock on its row: connected, not
    paused. The worker sends with it rather than reading it again (one statement fewer per
    job); a disconnect or lost grant after the claim is met by the provider call, as one
    just after a second read would be."""

    def take_payload(self) -> dict[str, Any]:
        """The payload, handed over once: afterwards ``payload`` is empty, so that a job in
        flight does not hold its attachments' base64 beside the message built from them for
        the whole provider call (docs/performance.md#memory)."""
        payload, self.payload = self.payload, {}
        return payload


@dataclass
class ClaimBatch:
    """What one claim leased, whether it may have left due jobs it could have taken, and what
    it saw of the rest of the queue (for the worker's next wait)."""

    jobs: list[ClaimedJob]
    more: bool
    """True when the claim stopped at a bound of its own rather than for want of due jobs:
    it locked ``limit`` mailboxes or stopped locking once the locked ones could fill it
    (``limits.mailboxes_to_lock``: others may have due jobs), skipped a mailbox with due jobs
    that another claimer held locked (PostgreSQL's ``SKIP LOCKED``: that claim may be over by
    now), leased ``limit`` jobs, or gave a mailbox its whole share (``limits.claim_share``: it
    may have more). False means every mailbox with due jobs was locked by this claim and gave
    what it had due or what its limits allowed, so claiming again at once would find nothing
    new; a worker then waits for a wake-up (an enqueue, a job of its own finishing when that
    can help: ``due_left``, the poll) instead of spending a claim to learn that."""
    due_left: bool = True
    """Whether queued jobs that were due when the claim looked are left after it, in any
    mailbox (one at its concurrency, paused or waiting for another claimer included). False
    means the claim took every due job: a slot freeing up cannot make one claimable, so the
    worker need not claim again until something is enqueued, requeued or becomes due."""
    next_due: dt.datetime | None = None
    """When the soonest queued job that was not due yet becomes due (None: there is none)."""


def _more(limit: int, locked: int, waiting: int, share: int, per_mailbox: Sequence[int]) -> bool:
    """``ClaimBatch.more`` of a claim that locked ``locked`` of the ``waiting`` mailboxes with
    due jobs and leased ``per_mailbox`` jobs of each."""
    if locked >= limit or locked < waiting or sum(per_mailbox) >= limit:
        return True
    return any(n >= share for n in per_mailbox)


class Claims:
    """The claim's statements, Core only, on a connection the caller opens: on PostgreSQL
    outside an explicit transaction (``claim_postgresql``: one call), on SQLite in its
    ``BEGIN IMMEDIATE`` transaction (``claim``; no ORM session: its jobs and mailboxes come
    back ``untracked``, as PostgreSQL's do, docs/performance.md "Ninth pass")."""

    def __init__(self, limits: LimitDefaults, clock: Clock) -> None:
        """``limits``: what applies to mailboxes without limits of their own."""
        self._limits = limits
        self._clock = clock

    async def claim(
        self,
        connection: AsyncConnection,
        worker: str,
        limit: int,
        lease: dt.timedelta,
        now: dt.datetime,
    ) -> ClaimBatch:
        """Lease at most ``limit`` due jobs of connected mailboxes to ``worker`` in
        ``connection``'s transaction, within each mailbox's limits, sharing the slots between
        accounts in turns. (On PostgreSQL, ``claim_postgresql`` does the same for less.)

        Pick the mailboxes with due jobs that are neither paused nor at their concurrency,
        read their usage, defer those at their rate or daily cap (``paused_until``), and lease
        their next jobs (priority, then ``run_after``). On SQLite the transaction is
        ``BEGIN IMMEDIATE``: one claimer (one writer) at a time, so no other claim can change
        a mailbox's usage between its read and the lease (on PostgreSQL the lock on each
        mailbox's row does that: ``claim_postgresql``; docs/architecture.md#mailbox-limits).
        """
        if limit <= 0:
            return ClaimBatch([], more=False)
        if connection.dialect.name == "postgresql":
            return await self.claim_postgresql(connection, worker, limit, lease, now)
        owner = lease_owner(worker)
        mailboxes, waiting = await self._lock_mailboxes(connection, now, limit)
        if not mailboxes:
            return await self._batch(connection, [], False, now)
        usages = await self._usage(connection, [mailbox.id for mailbox in mailboxes], now)
        limits = [effective_limits(mailbox, self._limits) for mailbox in mailboxes]
        share = claim_share(limit, len(mailboxes))
        next_ids = []
        for mailbox, mailbox_limits in zip(mailboxes, limits, strict=True):
            most = min(
                share, await self._allowance(connection, mailbox, mailbox_limits, usages, now)
            )
            next_ids.append(
                await self._next_job_ids(connection, mailbox.id, most, now) if most else []
            )
        shares = round_robin(limit, [len(ids) for ids in next_ids])
        wanted = [ids[:given] for ids, given in zip(next_ids, shares, strict=True)]
        payloads = await self._payloads(connection, [i for ids in wanted for i in ids])
        chosen: list[str] = []
        for mailbox, mailbox_limits, wanted_ids in zip(mailboxes, limits, wanted, strict=True):
            ids = [job_id for job_id in wanted_ids if job_id in payloads]  # content purged
            counts = [recipient_count(payloads[job_id]) for job_id in ids]
            usage = usages[mailbox.id]
            fit = within_daily_cap(mailbox_limits, usage, counts)
            if ids and not fit:
                until = (usage.oldest_claim_last_day or now) + DAILY_WINDOW
                await self._defer(connection, mailbox.id, Deferral(until, "daily_cap"))
            chosen += ids[:fit]
        # One writer at a time on SQLite: nothing is skipped for another claimer's lock, but
        # the claim may have stopped before mailboxes it could not fill.
        more = _more(limit, len(mailboxes), waiting, share, [len(ids) for ids in wanted])
        if not chosen:
            return await self._batch(connection, [], more, now)
        claimed = await self._lease(connection, worker, owner, chosen, now + lease, now)
        by_id = {mailbox.id: mailbox for mailbox in mailboxes}
        jobs = [
            ClaimedJob(
                claimed[i], payloads[i], Lease(i, worker, owner), by_id[claimed[i].mailbox_id]
            )
            for i in chosen
            if i in claimed
        ]
        return await self._batch(connection, jobs, more, now)

    async def claim_postgresql(
        self,
        connection: AsyncConnection,
        worker: str,
        limit: int,
        lease: dt.timedelta,
        now: dt.datetime,
    ) -> ClaimBatch:
        """``claim`` on PostgreSQL: one call of ``mailbox_worker_claim_0023``
        (``jobs/claim_sql.py``) on ``connection``, which the caller opens outside an explicit
        transaction (one round trip; the call's implicit transaction is the claim's) or,
        behind a transaction pooler, in one. No session: a claim is this one Core statement."""
        if limit <= 0:
            return ClaimBatch([], more=False)
        providers = self._limits.providers
        owner = lease_owner(worker)
        rows = (
            await connection.execute(
                CLAIM,
                {
                    "now": now,
                    "limit": limit,
                    "default_concurrency": self._limits.max_concurrency,
                    "providers": list(providers),
                    "provider_rates": [each.rate_per_minute for each in providers.values()],
                    "provider_caps": [each.daily_recipient_cap for each in providers.values()],
                    "minute_ago": now - RATE_WINDOW,
                    "day_ago": now - DAILY_WINDOW,
                    "rate_window": RATE_WINDOW,
                    "daily_window": DAILY_WINDOW,
                    "owner": owner,
                    "expires_at": now + lease,
                    "event_at": self._clock(),
                    "worker": worker,
                },
            )
        ).all()
        # At least one row; a row without a job carries the counts only.
        first = rows[0]
        due, next_due, locked = int(first.due), first.next_due, int(first.locked)
        if not locked:
            return ClaimBatch([], more=False, due_left=due > 0, next_due=next_due)
        claimed = []
        mailboxes: dict[str, Mailbox] = {}
        per_mailbox: dict[str, int] = {}
        for row in rows:
            if row.id is None:
                break
            # By position, as ``CLAIM`` selects them: a row's mapping view, looked up by name
            # for each of some fifty columns, cost about a sixth of a drain's client CPU.
            job = untracked(Job, zip(JOB_COLUMNS, row[:PAYLOAD_AT], strict=True))
            mailbox = mailboxes.get(job.mailbox_id)
            if mailbox is None:
                mailbox = mailboxes[job.mailbox_id] = untracked(
                    Mailbox, zip(MAILBOX_COLUMNS, row[PAYLOAD_AT + 1 : COUNTS_AT], strict=True)
                )
            leased = Lease(job.id, worker, owner)
            claimed.append(ClaimedJob(job, row[PAYLOAD_AT], leased, mailbox))
            per_mailbox[job.mailbox_id] = per_mailbox.get(job.mailbox_id, 0) + 1
        share = claim_share(limit, locked)
        more = _more(limit, locked, int(first.waiting), share, list(per_mailbox.values()))
        due_left = more or due > len(claimed)
        return ClaimBatch(claimed, more, due_left=due_left, next_due=next_due)

    async def _allowance(
        self,
        connection: AsyncConnection,
        mailbox: Mailbox,
        limits: MailboxLimits,
        usages: Mapping[str, MailboxUsage],
        now: dt.datetime,
    ) -> int:
        """How many jobs the locked mailbox may have now; 0, deferring it, at a rate or cap."""
        deferred = deferral(limits, usages[mailbox.id], now)
        if deferred is not None:
            await self._defer(connection, mailbox.id, deferred)
            return 0
        return allowance(limits, usages[mailbox.id])

    async def _lease(
        self,
        connection: AsyncConnection,
        worker: str,
        owner: str,
        job_ids: Sequence[str],
        expires_at: dt.datetime,
        now: dt.datetime,
    ) -> dict[str, Job]:
        """Move the chosen jobs that are still queued to ``running`` under this claim's
        ``owner`` (``lease_owner``), with their claim time, each with its event naming
        ``worker``."""
        binds = {"ids": list(job_ids), "owner": owner, "expires_at": expires_at, "now": now}
        rows = (await connection.execute(_SQLITE_LEASE, binds)).all()
        claimed = {row.id: untracked(Job, row._mapping) for row in rows}
        if claimed:
            at = self._clock()
            events = [
                {
                    "job_id": job_id,
                    "at": at,
                    "kind": "state",
                    "from_state": JobState.QUEUED,
                    "to_state": JobState.RUNNING,
                    "worker": worker,
                    "public_id": new_id("jev"),
                }
                for job_id in claimed
            ]
            await connection.execute(insert(JobEvent), events)
        return claimed

    async def _lock_mailboxes(
        self, connection: AsyncConnection, now: dt.datetime, limit: int
    ) -> tuple[list[Mailbox], int]:
        """The mailboxes this claim takes jobs of (SQLite: the transaction's write lock
        serialises claims), and how many were candidates. The candidates are the connected,
        unpaused mailboxes of unpaused accounts below their concurrency that have due jobs, in
        turns between accounts (each account's mailbox with the oldest due job first, then
        every account's second, ...); the claim takes the first ones whose rooms can fill it
        (``limits.mailboxes_to_lock``), as PostgreSQL's claim locks them. Each probe of
        ``jobs`` reads one index range per mailbox, of at most ``limit`` entries, so the scan
        does not grow with the number of queued jobs (``_SQLITE_LOCK_MAILBOXES``)."""
        binds = {"now": now, "default_concurrency": self._limits.max_concurrency, "limit": limit}
        rows = (await connection.execute(_SQLITE_LOCK_MAILBOXES, binds)).all()
        if not rows:
            return [], 0
        accounts = sum(1 for row in rows if row.turn == 1)
        rooms = [claim_room(limit, row.due, row.free, accounts) for row in rows]
        taken = rows[: mailboxes_to_lock(limit, rooms)]
        width = len(MAILBOX_COLUMNS)
        mailboxes = [
            untracked(Mailbox, zip(MAILBOX_COLUMNS, row[:width], strict=True)) for row in taken
        ]
        return mailboxes, int(rows[0].waiting)

    async def _batch(
        self, connection: AsyncConnection, jobs: list[ClaimedJob], more: bool, now: dt.datetime
    ) -> ClaimBatch:
        """The SQLite claim's answer. Unless it leased jobs and may have left more (then the
        worker claims again at once, and the rest of the queue is not read), one more
        statement reads the queue after the lease, which nothing else can have changed
        since the claim began (one writer): whether due jobs are left, and when the next
        not yet due becomes due."""
        if jobs and more:
            return ClaimBatch(jobs, more=True)
        due_left, next_due = (await connection.execute(_SQLITE_QUEUE_AHEAD, {"now": now})).one()
        return ClaimBatch(jobs, more, due_left=more or bool(due_left), next_due=next_due)

    async def _usage(
        self, connection: AsyncConnection, mailbox_ids: Sequence[str], now: dt.datetime
    ) -> dict[str, MailboxUsage]:
        """Each locked mailbox's running jobs and its claims in the rate and daily windows.

        In the claim's own ``BEGIN IMMEDIATE`` transaction, after every earlier claim
        committed."""
        day_ago = (now - DAILY_WINDOW).astimezone(dt.UTC)  # the hours are UTC's
        binds = {
            "ids": list(mailbox_ids),
            "minute_ago": now - RATE_WINDOW,
            "day_ago": day_ago,
            "whole_hours": day_ago.replace(minute=0, second=0, microsecond=0) + HOUR,
        }
        usages = dict.fromkeys(mailbox_ids, MailboxUsage())
        for row in (await connection.execute(_SQLITE_USAGE, binds)).all():
            usages[row[0]] = MailboxUsage(
                running=int(row[1]),
                claimed_last_minute=int(row[2]),
                recipients_last_day=int(row[3]),
                oldest_claim_last_minute=row[4],
                oldest_claim_last_day=row[5],
            )
        return usages

    async def _next_job_ids(
        self, connection: AsyncConnection, mailbox_id: str, count: int, now: dt.datetime
    ) -> list[str]:
        """The mailbox's next ``count`` due jobs: higher priority first, then the longest
        waiting."""
        binds = {"mailbox_id": mailbox_id, "now": now, "count": count}
        return list((await connection.scalars(_SQLITE_NEXT_JOB_IDS, binds)).all())

    async def _payloads(
        self, connection: AsyncConnection, job_ids: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        if not job_ids:
            return {}
        contents = await connection.execute(_SQLITE_PAYLOADS, {"ids": list(job_ids)})
        return {row[0]: row[1] for row in contents}

    async def _defer(
        self, connection: AsyncConnection, mailbox_id: str, deferred: Deferral
    ) -> None:
        """Skip the mailbox until its capacity returns, so its jobs are not rescanned each
        poll; they stay ``queued``. A later pause already set is kept."""
        await connection.execute(
            update(Mailbox)
            .where(
                Mailbox.id == mailbox_id,
                or_(Mailbox.paused_until.is_(None), Mailbox.paused_until < deferred.until),
            )
            .values(paused_until=deferred.until, pause_reason=deferred.reason)
        )


# The SQLite claim's statements, built once (docs/performance.md "Third pass"); the
# PostgreSQL claim's are in ``jobs/claim_sql.py``.
_QUEUED = Job.state == JobState.QUEUED
_NOW = bindparam("now", type_=UTCDateTime)


def _sqlite_queued_mailboxes() -> CTE:
    """Each mailbox with queued jobs once, by a skip scan of ``ix_jobs_queued`` (migration
    0021): the first mailbox id after the last one found, one probe each, so that the claim
    reads the mailboxes with queued jobs and not every connected one. Text, because the
    index is named (``INDEXED BY``, which Core cannot say; without statistics SQLite's
    planner preferred ``jobs (state, run_after)`` and a sort of every queued job at each
    step) and the state is a constant in it, as the index's predicate needs."""
    step = f"""
        SELECT j.mailbox_id FROM jobs AS j INDEXED BY ix_jobs_queued
        WHERE j.state = '{JobState.QUEUED}' {{after}} ORDER BY j.mailbox_id LIMIT 1"""  # noqa: S608 - constants only
    found = f"""
        SELECT ({step.format(after="")}) AS mailbox_id
        UNION ALL
        SELECT ({step.format(after="AND j.mailbox_id > queued.mailbox_id")})
        FROM queued WHERE queued.mailbox_id IS NOT NULL"""  # noqa: S608 - constants only
    return text(found).columns(column("mailbox_id", String)).cte("queued", recursive=True)


def _sqlite_lock_mailboxes() -> Select[Any]:
    limit = bindparam("limit", type_=Integer)
    queued = _sqlite_queued_mailboxes()
    oldest_due = (
        select(func.min(Job.run_after))
        .where(Job.mailbox_id == Mailbox.id, _QUEUED)
        .correlate(Mailbox)
        .scalar_subquery()
    )
    due_jobs = (
        select(Job.id)
        .where(Job.mailbox_id == Mailbox.id, _QUEUED, Job.run_after <= _NOW)
        .limit(limit)
        .correlate(Mailbox)
        .subquery("due_jobs")
    )
    due = select(func.count()).select_from(due_jobs).scalar_subquery()
    running = (
        select(func.count())
        .where(Job.mailbox_id == Mailbox.id, Job.state == JobState.RUNNING)
        .correlate(Mailbox)
        .scalar_subquery()
    )
    # A paused account's jobs wait (docs/privacy.md PP-7): its mailboxes are not candidates.
    account_paused = (
        exists()
        .where(Account.id == Mailbox.account_id, Account.paused_at.is_not(None))
        .correlate(Mailbox)
    )
    default_concurrency = bindparam("default_concurrency", type_=Integer)
    free = func.coalesce(Mailbox.max_concurrency, default_concurrency) - running
    waiting = (
        select(
            Mailbox.id,
            Mailbox.account_id,
            oldest_due.label("oldest_due"),
            free.label("free"),
        )
        .join(queued, queued.c.mailbox_id == Mailbox.id)
        .where(
            Mailbox.state == MailboxState.CONNECTED,
            or_(Mailbox.paused_until.is_(None), Mailbox.paused_until <= _NOW),
            free > 0,
            ~account_paused,
        )
        .subquery("waiting")
    )
    turns = (
        select(
            waiting.c.id,
            waiting.c.oldest_due,
            waiting.c.free,
            func.row_number()
            .over(
                partition_by=waiting.c.account_id,
                order_by=(waiting.c.oldest_due, waiting.c.id),
            )
            .label("turn"),
            func.count().over().label("waiting"),
        )
        .where(waiting.c.oldest_due <= _NOW)
        .subquery("turns")
    )
    return (
        # Rows of the mailbox's columns (the claim builds ``untracked``), then what its room
        # is made of (``limits.claim_room``) and how many mailboxes were candidates.
        select(
            *Mailbox.__table__.columns,
            turns.c.turn,
            turns.c.free,
            due.label("due"),
            turns.c.waiting,
        )
        .join(turns, turns.c.id == Mailbox.id)
        .order_by(turns.c.turn, turns.c.oldest_due, Mailbox.id)
        .limit(limit)
    )


def _sqlite_usage() -> Select[str, int, int, int, dt.datetime | None, dt.datetime | None]:
    """Each locked mailbox's usage, by index probes of its own: its running jobs, its claims
    in the rate window, and the recipients of its claims in the daily window, the window's
    whole hours from ``mailbox_claim_hours`` and the claims of the hour it starts in from
    ``jobs`` (migration 0022), as PostgreSQL's claim reads them."""
    minute_ago = bindparam("minute_ago", type_=UTCDateTime)
    day_ago = bindparam("day_ago", type_=UTCDateTime)
    whole_hours = bindparam("whole_hours", type_=UTCDateTime)
    own = Job.mailbox_id == Mailbox.id

    def scalar(column: Any, *where: Any) -> Any:
        return select(column).where(own, *where).correlate(Mailbox).scalar_subquery()

    in_minute = Job.claimed_at > minute_ago
    hours = (
        select(func.sum(MailboxClaimHour.recipients))
        .where(MailboxClaimHour.mailbox_id == Mailbox.id, MailboxClaimHour.hour >= whole_hours)
        .correlate(Mailbox)
        .scalar_subquery()
    )
    first_hour = scalar(
        func.sum(Job.recipient_count), Job.claimed_at > day_ago, Job.claimed_at < whole_hours
    )
    return select(
        Mailbox.id,
        scalar(func.count(), Job.state == JobState.RUNNING),
        scalar(func.count(), in_minute),
        func.coalesce(hours, 0) + func.coalesce(first_hour, 0),
        scalar(func.min(Job.claimed_at), in_minute),
        scalar(func.min(Job.claimed_at), Job.claimed_at > day_ago),
    ).where(Mailbox.id.in_(bindparam("ids", expanding=True)))


_SQLITE_LOCK_MAILBOXES = _sqlite_lock_mailboxes()
_SQLITE_USAGE = _sqlite_usage()
_SQLITE_NEXT_JOB_IDS = (
    select(Job.id)
    .where(Job.mailbox_id == bindparam("mailbox_id"), _QUEUED, Job.run_after <= _NOW)
    .order_by(Job.priority.desc(), Job.run_after, Job.created_at)
    .limit(bindparam("count", type_=Integer))
)
_SQLITE_PAYLOADS = select(JobContent.job_id, JobContent.payload).where(
    JobContent.job_id.in_(bindparam("ids", expanding=True))
)
_SQLITE_LEASE = (
    update(Job)
    .where(Job.id.in_(bindparam("ids", expanding=True)), keyed_state() == JobState.QUEUED)
    .values(
        state=JobState.RUNNING,
        lease_owner=bindparam("owner"),
        lease_expires_at=bindparam("expires_at", type_=UTCDateTime),
        updated_at=_NOW,
        claimed_at=_NOW,
    )
    .returning(*Job.__table__.columns)
)
_SQLITE_QUEUE_AHEAD = select(
    exists().where(_QUEUED, Job.run_after <= _NOW),
    select(func.min(Job.run_after)).where(_QUEUED, Job.run_after > _NOW).scalar_subquery(),
)

__all__ = ["OWNER_LENGTH", "ClaimBatch", "ClaimedJob", "Claims", "Lease", "lease_owner"]
