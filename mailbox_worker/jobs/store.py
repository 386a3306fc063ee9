"""The job store, ``JobStore``: enqueue and read jobs, and the actions of clients and of the
mailbox service on them (cancel, settle an ``unknown`` job, hold or release a mailbox's jobs),
on SQLite and PostgreSQL alike. What workers do to jobs is in ``jobs/queue.py``; what every
transition shares is in ``jobs/transitions.py`` (states: docs/architecture.md#job-states).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Select, Table, Update, and_, bindparam, func, insert, select, tuple_, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from mailbox_worker.clock import Clock, new_id, utcnow
from mailbox_worker.db.accounts import audit_row
from mailbox_worker.db.models import Job, JobContent, JobEvent, Mailbox, keyed_state, untracked
from mailbox_worker.errors import Conflict
from mailbox_worker.events.outbox import outbox_row
from mailbox_worker.jobs.coalescing import Coalescer
from mailbox_worker.jobs.enqueue_sql import (
    INSERT_JOB_CHECKED,
    INSERT_JOBS,
    INSERT_JOBS_CHECKED,
    NEW_JOB_COLUMNS,
)
from mailbox_worker.jobs.limits import recipient_count
from mailbox_worker.jobs.message_json import dumps_message
from mailbox_worker.jobs.transitions import (
    JOB_SETTLED,
    RETRY,
    Settlement,
    announce,
    job_event,
    message_id_for,
    move_each,
)
from mailbox_worker.jobs.wakeups import announce_in, origin
from mailbox_worker.states import CANCELLABLE, JobState


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
    send_at: dt.datetime | None = None
    """Not claimed before then (scheduled dispatch); None: as soon as possible."""
    priority: int = 0
    """Higher first among the jobs of its mailbox (``JobQueue.claim``)."""
    payload_json: str | None = None
    """``json.dumps(payload)``, when the caller made it already (the intake, which checked
    the attachments once for this and the digest: ``jobs/message_json.py``); None: the
    store makes it where it needs it (PostgreSQL: ``payload_text``)."""

    def payload_text(self) -> str:
        """``json.dumps(payload)``: ``payload_json``, or made now."""
        return self.payload_json if self.payload_json is not None else dumps_message(self.payload)


Prepare = Callable[[Mapping[str, Mailbox]], Sequence[NewJob]]
"""Given the mailboxes a call names (those of the account that exist, by id, read and locked
in the jobs' transaction), the jobs to enqueue (``JobStore.enqueue_for_mailboxes``)."""


Position = tuple[dt.datetime, str]
"""Where a page of a list ended: the ``(created_at, id)`` of its last row (keyset pagination)."""


@dataclass(frozen=True)
class JobFilter:
    """Which jobs ``JobStore.find`` returns: every given field must match."""

    account_id: str | None = None
    mailbox_id: str | None = None
    state: str | tuple[str, ...] | None = None
    """One state, or several (any of them)."""
    reference: str | None = None
    created_after: dt.datetime | None = None
    """Created at or after this instant (included)."""
    created_before: dt.datetime | None = None
    """Created before this instant (excluded): consecutive ranges neither overlap nor miss."""


def find_query(wanted: JobFilter, limit: int, after: Position | None = None) -> Select[Job]:
    """The statement of ``JobStore.find``. With an account, PostgreSQL reads it in order
    through ``ix_jobs_account_id_created_at_id`` and stops after ``limit`` rows; with a
    reference, through ``ix_jobs_account_id_reference_created_at_id``; the jobs of a rare
    state, through ``ix_jobs_account_id_state_created_at_id`` (figures: docs/api.md)."""
    conditions = [
        column == value
        for column, value in (
            (Job.account_id, wanted.account_id),
            (Job.mailbox_id, wanted.mailbox_id),
            (Job.reference, wanted.reference),
        )
        if value is not None
    ]
    if isinstance(wanted.state, str):
        conditions.append(Job.state == wanted.state)
    elif wanted.state is not None:
        conditions.append(Job.state.in_(wanted.state))
    if wanted.created_after is not None:
        conditions.append(Job.created_at >= wanted.created_after)
    if wanted.created_before is not None:
        conditions.append(Job.created_at < wanted.created_before)
    if after is not None:
        conditions.append(tuple_(Job.created_at, Job.id) < tuple_(*after))
    return (
        select(Job).where(*conditions).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    )


class JobStore:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock = utcnow,
        idempotency_window: dt.timedelta = dt.timedelta(hours=24),
        *,
        transaction_pooler: bool = False,
    ) -> None:
        """``transaction_pooler``: the database is reached through a pooler in transaction
        mode (``database.transaction_pooler``), where every statement runs in a transaction."""
        self._sessions = sessions
        self._clock = clock
        self._idempotency_window = idempotency_window
        """How long an ``Idempotency-Key`` answers its first job (``retention.idempotency_hours``):
        a key older than that is forgotten, and its next use enqueues a new job."""
        engine = sessions.kw.get("bind")
        self._autocommit: AsyncEngine | None = None
        """The engine with statements that commit one by one (PostgreSQL, no transaction
        pooler): for the enqueue of one job from mailboxes read without a lock
        (``_enqueue_one``), through a Core connection (no session: about 65 µs of CPU less
        per request; docs/performance.md "Sixth pass")."""
        self._autocommit_sessions: async_sessionmaker[AsyncSession] | None = None
        """Sessions on ``_autocommit``: for that enqueue when its key conflicted."""
        if (
            isinstance(engine, AsyncEngine)
            and engine.dialect.name == "postgresql"
            and not transaction_pooler
        ):
            self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
            self._autocommit_sessions = async_sessionmaker(self._autocommit, expire_on_commit=False)
        self._mailboxes = MailboxSnapshots()
        postgresql = isinstance(engine, AsyncEngine) and engine.dialect.name == "postgresql"
        self._single_calls: Coalescer[_Call, _Answer] = Coalescer(
            self._enqueue_calls,
            key=id,
            most=SINGLE_CALLS_MOST,
            senders=SINGLE_CALLS_SENDERS if postgresql else 1,
            size=lambda call: call.size,
            most_size=SINGLE_CALLS_MOST_BYTES,
        )
        """Single-job enqueues (``POST /v1/jobs``) that arrive while ``senders`` are being
        written go together (``jobs/coalescing.py``): a request waits only once that many are
        on their way (SQLite: one, its single writer; PostgreSQL: ``SINGLE_CALLS_SENDERS``)."""

    async def enqueue(self, new: NewJob) -> tuple[Job, bool]:
        """Commit a job (and its content) and return ``(job, created)``.

        With an idempotency key already used by the account within the idempotency window,
        returns the first job and ``created=False`` when the request is the same, and raises
        ``Conflict`` otherwise. A key used before the window is forgotten (set to NULL on its
        job) in the transaction that enqueues the new job.
        """
        (result,) = await self.enqueue_many([new])
        if isinstance(result, Conflict):
            raise result
        return result

    async def enqueue_many(self, news: Sequence[NewJob]) -> list[tuple[Job, bool] | Conflict]:
        """Commit every job of ``news`` in one transaction (``_enqueue``)."""
        async with self._sessions.begin() as session:
            return await self._enqueue(session, news)

    async def enqueue_for_mailboxes(
        self, account_id: str, mailbox_ids: Sequence[str], prepare: Prepare, *, size: int = 0
    ) -> list[tuple[Job, bool] | Conflict]:
        """Read the account's mailboxes among ``mailbox_ids`` and enqueue the jobs ``prepare``
        makes of them, in one transaction: the intake checks a request against its mailbox as
        it is when the job commits.

        The mailboxes are read first, ``FOR KEY SHARE`` (one ``SELECT``): a state change takes
        ``FOR UPDATE`` (``MailboxStore.lock_for_state_change``), so one under way is waited
        for and its outcome read, and one that comes later waits for these jobs and its sweep
        sees them; a claim (``FOR NO KEY UPDATE``) does not wait. So no consent or disconnect
        can slip between the check and the commit, and nothing needs settling after it
        (docs/architecture.md "Enqueue and mailbox state"). ``prepare`` runs inside the
        transaction and must not wait on anything. On PostgreSQL one mailbox's request tries
        ``_enqueue_one`` first (the same guarantee in one round trip); ``prepare`` may then run
        twice, each time on the mailbox as read. ``size``: about how many bytes the jobs'
        contents hold (their bodies and attachments), which bounds what one write of requests that
        arrived together carries (``SINGLE_CALLS_MOST_BYTES``).
        """
        call = _Call(account_id, tuple(mailbox_ids), prepare, size)
        answer: _Answer
        if len(mailbox_ids) == 1:
            answer = await self._single_calls.submit(call)
        else:
            (answer,) = await self._enqueue_locking([call])
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def _enqueue_calls(self, calls: Sequence[_Call]) -> list[_Answer]:
        """Single-job calls that arrived together (``_single_calls``): a lone one as
        ``_enqueue_one`` (PostgreSQL, one round trip) or else the locking read; several by
        ``_enqueue_unlocked`` (PostgreSQL, one statement), then those it did not answer in one
        transaction of the locking read (``_enqueue_locking``). So under load one write
        carries many requests (on SQLite, one holder of the write lock instead of each
        request queueing for it)."""
        if len(calls) == 1:
            (call,) = calls
            enqueued = await self._enqueue_one(call.account_id, call.mailbox_ids[0], call.prepare)
            if enqueued is not None:
                return [enqueued]
            return await self._enqueue_locking(calls)
        answers = await self._enqueue_unlocked(calls)
        rest = [call for call, answer in zip(calls, answers, strict=True) if answer is None]
        if not rest:
            return [answer for answer in answers if answer is not None]
        try:
            locked = iter(await self._enqueue_locking(rest))
        except Exception as error:  # only theirs: the others' jobs are committed
            return [error if answer is None else answer for answer in answers]
        return [next(locked) if answer is None else answer for answer in answers]

    async def _enqueue_unlocked(self, calls: Sequence[_Call]) -> list[_Answer | None]:
        """``_enqueue_one`` for several single-job calls at once (PostgreSQL): each prepared
        from its mailbox as last read (those not kept read now, together, without a lock),
        and all their jobs inserted by one statement outside a transaction
        (``INSERT_JOBS_CHECKED``) only if every one of those mailboxes, locked ``FOR KEY
        SHARE``, is still as read. Per call, its answer, or None where the locking path must
        answer: as for ``_enqueue_one`` (not the account's mailbox, refused, not one job, a
        ``held`` one), a job whose key conflicted (a replay, a reuse or an expired key: the
        locking path reads the key's first job), and every call when a mailbox changed."""
        engine = self._autocommit
        if engine is None:
            return [None] * len(calls)
        unknown = [call for call in calls if self._snapshot(call) is None]
        if unknown:
            async with engine.connect() as connection:
                read = await connection.execute(
                    _READ_MAILBOXES,
                    {
                        "ids": sorted({call.mailbox_ids[0] for call in unknown}),
                        "accounts": sorted({call.account_id for call in unknown}),
                    },
                )
                for found in read:
                    kept = untracked(Mailbox, found._mapping)
                    self._mailboxes.keep(kept.account_id, [kept])
        answers: list[_Answer | None] = []
        chosen: list[tuple[int, NewJob, Mailbox]] = []
        for index, call in enumerate(calls):
            answers.append(None)
            mailbox = self._snapshot(call)
            if mailbox is None:
                continue  # not the account's: the locking read answers that
            try:
                news = call.prepare({mailbox.id: mailbox})
            except Exception as error:  # that call's own failure, not the others'
                answers[index] = error
                continue
            if len(news) == 1 and not news[0].held:
                chosen.append((index, news[0], mailbox))
        if not chosen:
            return answers
        now = self._clock()
        rows = [self._job_row(new, now) for _, new, _ in chosen]
        texts = {
            row["id"]: new.payload_text() for row, (_, new, _) in zip(rows, chosen, strict=True)
        }
        expected = list({mailbox.id: mailbox for _, _, mailbox in chosen}.values())
        try:
            async with engine.connect() as connection:
                inserted = await _insert_with_companions_postgresql(
                    connection, rows, texts, now, expected=expected
                )
        except _MailboxChanged:
            for changed in expected:
                self._mailboxes.forget(changed.id)
            return answers  # the chosen calls' too are still None: all take the locking path
        for (index, _, _), job_row in zip(chosen, rows, strict=True):
            job = inserted.get(job_row["id"])
            if job is not None:
                answers[index] = [(job, True)]
        return answers

    def _snapshot(self, call: _Call) -> Mailbox | None:
        return self._mailboxes.get(call.account_id, call.mailbox_ids[0])

    async def _enqueue_locking(self, calls: Sequence[_Call]) -> list[_Answer]:
        """``calls`` in one transaction: every mailbox they name read and locked first (one
        ``SELECT … FOR KEY SHARE``), each call's ``prepare`` given only its own account's,
        then all their jobs inserted by one ``_enqueue``. A call whose ``prepare`` raised
        gets its exception and adds no job; the others are unaffected."""
        async with self._sessions.begin() as session:
            ids = sorted({mailbox_id for call in calls for mailbox_id in call.mailbox_ids})
            accounts = sorted({call.account_id for call in calls})
            read = await session.execute(_LOCK_MAILBOXES, {"ids": ids, "accounts": accounts})
            # Core rows made into untracked objects, as for the jobs (``_insert_rows``).
            mailboxes = {row.id: untracked(Mailbox, row._mapping) for row in read}
            prepared: list[Sequence[NewJob] | Exception] = []
            for call in calls:
                named = (mailboxes.get(mailbox_id) for mailbox_id in call.mailbox_ids)
                own = {
                    mailbox.id: mailbox
                    for mailbox in named
                    if mailbox is not None and mailbox.account_id == call.account_id
                }
                self._mailboxes.keep(call.account_id, own.values())
                try:
                    prepared.append(call.prepare(own))
                except Exception as error:  # that call's own failure, not the others'
                    prepared.append(error)
            enqueued = iter(
                await self._enqueue(
                    session,
                    [new for news in prepared if not isinstance(news, Exception) for new in news],
                )
            )
            return [
                news if isinstance(news, Exception) else [next(enqueued) for _ in news]
                for news in prepared
            ]

    async def _enqueue_one(
        self, account_id: str, mailbox_id: str, prepare: Prepare
    ) -> list[tuple[Job, bool] | Conflict] | None:
        """``enqueue_for_mailboxes`` of one request on PostgreSQL in one round trip, most
        often: ``prepare`` runs on the mailbox as last read (``MailboxSnapshots``, else read
        now, without a lock), and the job's statement (``INSERT_JOB_CHECKED``, outside a
        transaction) inserts it only if the mailbox, locked ``FOR KEY SHARE``, is still as
        read. The same guarantee as the locking read's: a state change that commits first is
        seen (PostgreSQL reads a row changed while it waited for the lock again), one that
        comes later waits for the job. None when that path does not apply (no autocommit
        engine, ``prepare`` refused, or made other than one job, or a ``held`` one, whose
        outbox event must commit with it) or the mailbox changed: the caller takes the
        locking read. A key that conflicted is answered by its first job (a replay, a
        reuse), read in a session of its own; an expired one by ``_enqueue`` in that session:
        the request's single job, so nothing commits apart from it."""
        engine, sessions = self._autocommit, self._autocommit_sessions
        if engine is None or sessions is None:
            return None
        mailbox = self._mailboxes.get(account_id, mailbox_id)
        if mailbox is None:
            async with engine.connect() as connection:
                read = await connection.execute(
                    _READ_MAILBOXES, {"ids": [mailbox_id], "accounts": [account_id]}
                )
                found = [untracked(Mailbox, row._mapping) for row in read]
            self._mailboxes.keep(account_id, found)
            if not found:
                return None  # not the account's: the locking read answers that
            mailbox = found[0]
        news = prepare({mailbox.id: mailbox})
        if len(news) != 1 or news[0].held:
            # Refused (by what may be an earlier state: only the locking read may refuse), or
            # not a single job, or a held one (its outbox event commits with it).
            return None
        (new,) = news
        now = self._clock()
        row = self._job_row(new, now)
        text = new.payload_text()
        try:
            async with engine.connect() as connection:
                inserted = await _insert_with_companions_postgresql(
                    connection, [row], {row["id"]: text}, now, expected=mailbox
                )
            job = inserted.get(row["id"])
            if job is not None:
                return [(job, True)]
            # The key conflicted and nothing was inserted: the key's first job answers (a
            # replay, or a reuse by another request), read without sending the insert again.
            async with sessions() as session:
                existing = await self._existing(session, [row], inserted, now)
                first = existing.get((row["account_id"], row["idempotency_key"]))
                if first is not None:
                    same = first.request_sha256 == new.request_sha256
                    return [(first, False) if same else _key_reused()]
                # Its first job is older than the window: forget the key and insert.
                enqueued = await self._enqueue(session, news, expected=mailbox)
                await session.commit()  # nothing is pending: each statement committed
                return enqueued
        except _MailboxChanged:
            self._mailboxes.forget(mailbox_id)
            return None

    async def _enqueue(
        self,
        session: AsyncSession,
        news: Sequence[NewJob],
        expected: Mailbox | None = None,
    ) -> list[tuple[Job, bool] | Conflict]:
        """Insert every job of ``news`` in ``session``'s transaction; one result per job, in
        order.

        Each result is ``enqueue``'s answer for that job, or the ``Conflict`` it would raise
        (a key reused by a different request), so that one reused key fails only its own
        job. Statements, whatever the count: insert the jobs (one multi-row ``INSERT … ON
        CONFLICT DO NOTHING RETURNING``: a key the account used before conflicts), read the
        first jobs of the keys that conflicted (only then); for a key whose first job is
        older than the window (only then), forget it (one ``UPDATE``) and insert its job
        again (with ``expected``, a single job's mailbox read without a lock, each insert
        checks it is unchanged: ``_MailboxChanged`` otherwise); insert the contents, events
        and outbox rows of the new jobs (one multi-row ``INSERT`` per table). On PostgreSQL
        each insert of jobs is one statement with their contents, events and the workers'
        ``NOTIFY`` (``jobs/enqueue_sql.py``). Forgetting expired keys only once one conflicts
        spares every keyed enqueue an ``UPDATE`` (docs/performance.md, "The enqueue
        request").
        """
        now = self._clock()
        rows: list[dict[str, Any]] = []
        slots: list[int | tuple[str, str]] = []
        """Per job: the index of its row, or ``(key, digest)`` when an earlier job of the same
        call used its key (it answers that job's result)."""
        first_of_key: dict[tuple[str, str], int] = {}
        payloads: dict[str, dict[str, Any]] = {}
        news_by_id: dict[str, NewJob] = {}
        """Per row id, its job (PostgreSQL: the payload's text, ``NewJob.payload_text``)."""
        for new in news:
            key = new.idempotency_key
            if key is not None and (new.account_id, key) in first_of_key:
                slots.append((new.account_id, key))
                continue
            if key is not None:
                first_of_key[(new.account_id, key)] = len(rows)
            slots.append(len(rows))
            rows.append(self._job_row(new, now))
            payloads[rows[-1]["id"]] = new.payload
            news_by_id[rows[-1]["id"]] = new
        if not rows:
            return []
        accounts = {new.account_id for new in news}
        postgresql = session.get_bind().dialect.name == "postgresql"

        async def insert_rows(batch: Sequence[dict[str, Any]]) -> dict[str, Job]:
            if not postgresql:
                return await _insert_rows(session, batch)
            json_texts = {row["id"]: news_by_id[row["id"]].payload_text() for row in batch}
            inserted = await _insert_with_companions_postgresql(
                session, batch, json_texts, now, expected
            )
            for job in inserted.values():
                announce(session, job, job.state, "enqueued", now)  # a held job's event
            return inserted

        inserted = await insert_rows(rows)
        existing = await self._existing(session, rows, inserted, now)
        expired = [
            row
            for row in rows
            if row["id"] not in inserted
            and (row["account_id"], row["idempotency_key"]) not in existing
        ]
        if expired:  # their keys' first jobs are older than the window: forget, insert
            forget = {row["idempotency_key"] for row in expired}
            await session.execute(self._forget_expired_keys(accounts, forget, now))
            inserted |= await insert_rows(expired)
            existing |= await self._existing(session, expired, inserted, now)
        if not postgresql:
            await self._add_companions(session, payloads, inserted, now)
        results: list[tuple[Job, bool] | Conflict] = []
        for new, slot in zip(news, slots, strict=True):
            row = rows[slot] if isinstance(slot, int) else rows[first_of_key[slot]]
            job = inserted.get(row["id"])
            created = job is not None and isinstance(slot, int)
            if job is None:
                job = existing.get((row["account_id"], row["idempotency_key"]))
            if job is None:
                raise LookupError(f"job {row['id']} neither inserted nor conflicting")
            if job.request_sha256 != new.request_sha256:
                results.append(_key_reused())
            else:
                results.append((job, created))
        return results

    def _job_row(self, new: NewJob, now: dt.datetime) -> dict[str, Any]:
        job_id = new_id("job")
        return {
            "id": job_id,
            "account_id": new.account_id,
            "mailbox_id": new.mailbox_id,
            "mode": new.mode,
            "state": JobState.HELD if new.held else JobState.QUEUED,
            "reference": new.reference,
            "idempotency_key": new.idempotency_key,
            "request_sha256": new.request_sha256,
            "message_id": message_id_for(job_id, new.message_id_domain),
            "attempts": 0,
            "transient_failures": 0,
            "run_after": now if new.send_at is None else max(now, new.send_at),
            "send_at": new.send_at,
            "priority": new.priority,
            "deadline": new.deadline,
            # Counted once here, read by every claim against the daily cap (jobs/limits.py).
            "recipient_count": recipient_count(new.payload),
            "created_at": now,
            "updated_at": now,
        }

    @staticmethod
    async def _add_companions(
        session: AsyncSession,
        payloads: dict[str, dict[str, Any]],
        inserted: dict[str, Job],
        now: dt.datetime,
    ) -> None:
        """The content and ``enqueued`` event of each new job: one multi-row ``INSERT`` per
        table (no ids read back, so SQLite takes them in one statement too), the outbox
        event of each new ``held`` job (``announce``), and one wake-up of the workers
        (``announce_in``: a ``NOTIFY`` on PostgreSQL, sent on commit)."""
        created = list(inserted.values())
        if not created:
            return
        await session.execute(
            insert(JobContent), [{"job_id": job.id, "payload": payloads[job.id]} for job in created]
        )
        await session.execute(
            insert(JobEvent),
            [
                {
                    "job_id": job.id,
                    "at": now,
                    "kind": "state",
                    "from_state": None,
                    "to_state": job.state,
                    "code": "enqueued",
                    "public_id": new_id("jev"),
                }
                for job in created
            ],
        )
        for job in created:
            announce(session, job, job.state, "enqueued", now)
        await announce_in(session)  # wakes every worker process, on commit

    async def _existing(
        self,
        session: AsyncSession,
        rows: Sequence[dict[str, Any]],
        inserted: dict[str, Job],
        now: dt.datetime,
    ) -> dict[tuple[str, str | None], Job]:
        """The first jobs of the keys whose rows conflicted (none read when none did)."""
        conflicted = [row for row in rows if row["id"] not in inserted]
        if not conflicted:
            return {}
        query = select(Job).where(
            tuple_(Job.account_id, Job.idempotency_key).in_(
                [(row["account_id"], row["idempotency_key"]) for row in conflicted]
            ),
            Job.created_at > now - self._idempotency_window,
        )
        return {(job.account_id, job.idempotency_key): job for job in await session.scalars(query)}

    async def replay(self, account_id: str, key: str, request_sha256: str) -> Job | None:
        """The job first enqueued under ``key`` (None if none): ``Conflict`` when it was
        enqueued by a different request."""
        existing = await self._by_idempotency_key(account_id, key)
        if existing is not None and existing.request_sha256 != request_sha256:
            raise _key_reused()
        return existing

    def _forget_expired_keys(self, accounts: set[str], keys: set[str], now: dt.datetime) -> Update:
        """Blank each of ``keys`` on the accounts' jobs that used it before the window."""
        return (
            update(Job)
            .where(
                Job.account_id.in_(accounts),
                Job.idempotency_key.in_(keys),
                Job.created_at <= now - self._idempotency_window,
            )
            .values(idempotency_key=None)
        )

    async def _by_idempotency_key(self, account_id: str, key: str) -> Job | None:
        """The account's job enqueued under ``key`` within the idempotency window."""
        query = select(Job).where(
            Job.account_id == account_id,
            Job.idempotency_key == key,
            Job.created_at > self._clock() - self._idempotency_window,
        )
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

    async def find(
        self, wanted: JobFilter, limit: int = 50, after: Position | None = None
    ) -> list[Job]:
        """At most ``limit`` jobs matching ``wanted``, the most recently created first (ties:
        the greater id first), starting after ``after`` (the last row of the previous page).

        Keyset pagination, never an offset: rows added meanwhile shift no page."""
        async with self._sessions() as session:
            return list((await session.scalars(find_query(wanted, limit, after))).all())

    async def held_counts(self, account_id: str) -> dict[str, int]:
        """How many ``held`` jobs each mailbox of ``account_id`` has (a mailbox with none is
        absent): one grouped count, read through the state index."""
        query = (
            select(Job.mailbox_id, func.count())
            .where(Job.account_id == account_id, Job.state == JobState.HELD)
            .group_by(Job.mailbox_id)
        )
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        return {mailbox_id: int(count) for mailbox_id, count in rows}

    async def oldest_due(self) -> dt.datetime | None:
        """Since when the longest-waiting ``queued`` job has been due (None: none is)."""
        query = select(func.min(Job.run_after)).where(
            Job.state == JobState.QUEUED, Job.run_after <= self._clock()
        )
        async with self._sessions() as session:
            return await session.scalar(query)

    async def payload(self, job_id: str) -> dict[str, Any] | None:
        async with self._sessions() as session:
            content = await session.get(JobContent, job_id)
        return None if content is None else content.payload

    async def release_held(self, mailbox_id: str) -> int:
        """Held jobs of a reconnected mailbox go back to ``queued`` (``mailbox_reconnected``),
        announced to every worker process (``announce_in``)."""
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
        async with self._sessions.begin() as session:
            moved = await move_each(
                session,
                and_(Job.mailbox_id == mailbox_id, Job.state.in_(from_states)),
                to_state,
                code,
                message,
                self._clock(),
            )
            if moved and to_state == JobState.QUEUED:
                await announce_in(session)  # due now: wakes every worker process, on commit
            return moved

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
                    job_event(
                        self._clock(),
                        job_id,
                        "state",
                        previous,
                        JobState.CANCELLED,
                        code="cancelled_by_client",
                        detail=actor,
                    )
                )
                announce(session, job, JobState.CANCELLED, "cancelled_by_client", now)
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
                    .where(owned, keyed_state() == JobState.UNKNOWN)
                    .values(**values)
                    .returning(Job)
                )
            ).one_or_none()
            if job is None:
                current = (await session.scalars(select(Job).where(owned))).one_or_none()
                return None if current is None else (current, False)
            if settlement.state == JobState.QUEUED:
                await announce_in(session)  # due now: wakes every worker process, on commit
            data = {"job_id": job.id, "mailbox_id": job.mailbox_id, "state": settlement.state}
            session.add_all(
                [
                    job_event(
                        self._clock(),
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


JOBS = cast(Table, Job.__table__)
MAILBOXES = cast(Table, Mailbox.__table__)


async def _insert_rows(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> dict[str, Job]:
    """The jobs of ``rows`` inserted (those whose key conflicted are not), by id; their
    contents and events are ``JobStore._add_companions``'s (SQLite).

    A Core ``INSERT … RETURNING`` of the table's columns, made into ``Job`` objects that no
    session tracks: the ORM's bulk insert did the same work for about twice the CPU (the
    enqueue transaction's statements: 2.0 to 2.3 ms, as Core 1.1 to 1.3 ms;
    docs/performance.md "Second pass")."""
    returned = await session.execute(_INSERT_NEW_JOBS, rows)
    return {row.id: untracked(Job, row._mapping) for row in returned}


async def _insert_with_companions_postgresql(
    executor: AsyncSession | AsyncConnection,
    rows: Sequence[dict[str, Any]],
    payloads: Mapping[str, str],
    now: dt.datetime,
    expected: Mailbox | Sequence[Mailbox] | None = None,
) -> dict[str, Job]:
    """``_insert_rows`` and ``JobStore._add_companions`` in one statement, the workers'
    ``NOTIFY`` included (``jobs/enqueue_sql.py``), in ``executor``'s transaction (or, on an
    autocommit connection, committed). With ``expected`` (the mailbox of a single job, or
    the mailboxes of several, read without a lock), only if they are unchanged
    (``INSERT_JOB_CHECKED``, ``INSERT_JOBS_CHECKED``): ``_MailboxChanged`` otherwise, nothing
    inserted. The caller announces the new ``held`` jobs."""
    if expected is None or not isinstance(expected, Mailbox):
        # In the order of their keys: two statements inserting the same keys (a burst sent
        # twice at once) then wait on each other's rows in one order, never in a cycle
        # (``ON CONFLICT`` waits for a row in progress; without the order they deadlocked).
        rows = sorted(rows, key=_key_order)
        binds: dict[str, Any] = {name: [row[name] for row in rows] for name in NEW_JOB_COLUMNS}
        binds["state"] = [str(state) for state in binds["state"]]
        binds["payloads"] = [payloads[row["id"]] for row in rows]
        binds["event_ids"] = [new_id("jev") for _ in rows]
        binds["now"] = now
        binds["origin"] = origin()
        returned: Sequence[Sequence[Any]]
        if expected is None:
            returned = (await executor.execute(INSERT_JOBS, binds)).all()
        else:
            binds["expected_ids"] = [mailbox.id for mailbox in expected]
            binds["expected_accounts"] = [mailbox.account_id for mailbox in expected]
            binds["expected_states"] = [str(mailbox.state) for mailbox in expected]
            binds["expected_addresses"] = [mailbox.address for mailbox in expected]
            binds["expected_capabilities"] = [
                json.dumps(mailbox.capabilities) for mailbox in expected
            ]
            binds["expected_providers"] = [mailbox.provider for mailbox in expected]
            checked = (await executor.execute(INSERT_JOBS_CHECKED, binds)).all()
            if not checked[0].unchanged:
                raise _MailboxChanged
            returned = [row[1:] for row in checked if row.id is not None]
        # By position (the statement returns the table's columns in order): a row's mapping
        # view costs about three times as much as ``zip`` (2.3 µs a job).
        inserted = {
            row[0]: untracked(Job, zip(_JOB_COLUMN_NAMES, row, strict=True)) for row in returned
        }
    else:
        (row,) = rows
        binds = {name: row[name] for name in NEW_JOB_COLUMNS}
        binds["state"] = str(row["state"])
        binds["payload"] = payloads[row["id"]]
        binds["event_id"] = new_id("jev")
        binds["now"] = now
        binds["origin"] = origin()
        binds["expected_id"] = expected.id
        binds["expected_account"] = expected.account_id
        binds["expected_state"] = str(expected.state)
        binds["expected_address"] = expected.address
        binds["expected_capabilities"] = json.dumps(expected.capabilities)
        binds["expected_provider"] = expected.provider
        returned_rows = (await executor.execute(INSERT_JOB_CHECKED, binds)).all()
        if not returned_rows[0].unchanged:
            raise _MailboxChanged
        inserted = {  # ``unchanged``, then the table's columns in order
            row.id: untracked(Job, zip(_JOB_COLUMN_NAMES, row[1:], strict=True))
            for row in returned_rows
            if row.id is not None
        }
    return inserted


# The enqueue's statements, built once (a statement built per call costs more CPU than its
# execution's Python side: docs/performance.md "Third pass").
# A jobs ``INSERT`` that skips a row whose key the account already used (the unique
# ``(account_id, idempotency_key)``; NULL keys never conflict), returning every column
# (SQLite; PostgreSQL's is ``INSERT_JOBS``).
_INSERT_NEW_JOBS = sqlite_insert(JOBS).on_conflict_do_nothing().returning(*JOBS.columns)
# The mailboxes among ``ids`` of the ``accounts`` (``_enqueue_one``, ``_enqueue_unlocked``: no
# lock; each call then takes only its own account's).
_READ_MAILBOXES = (
    select(MAILBOXES)
    .where(
        MAILBOXES.c.id.in_(bindparam("ids", expanding=True)),
        MAILBOXES.c.account_id.in_(bindparam("accounts", expanding=True)),
    )
    .order_by(MAILBOXES.c.id)
)
# The same, ``FOR KEY SHARE`` (``_enqueue_locking``).
_LOCK_MAILBOXES = _READ_MAILBOXES.with_for_update(read=True, key_share=True)
_JOB_COLUMN_NAMES = [column.name for column in JOBS.columns]


SINGLE_CALLS_MOST = 200
"""The most single-job enqueues one transaction carries."""
SINGLE_CALLS_MOST_BYTES = 32 * 1024 * 1024
"""The most bytes of contents one write of single-job enqueues carries: requests of up to
``server.max_request_bytes`` each must not make one statement of gigabytes (PostgreSQL
refuses a parameter over 1 GB, and the driver copies every one into one buffer)."""
SINGLE_CALLS_SENDERS = 4
"""PostgreSQL: how many batches of single-job enqueues are written at once before the next
requests wait and go together. One or four measured alike for the API alone (1,556 and 1,701
req/s); where the API shares its event loop with a busy worker, four kept more requests
moving (382 and 420 req/s end to end; docs/performance.md, "Eighth pass")."""


@dataclass(frozen=True, eq=False)
class _Call:
    """One ``enqueue_for_mailboxes`` call."""

    account_id: str
    mailbox_ids: tuple[str, ...]
    prepare: Prepare
    size: int


_Answer = list[tuple[Job, bool] | Conflict] | Exception
"""A call's results, or the exception that failed it alone (its ``prepare`` raised, or the
locking path failed after other calls of its batch had committed)."""


def _key_order(row: Mapping[str, Any]) -> tuple[str, str]:
    return (row["account_id"], row["idempotency_key"] or "")


class _MailboxChanged(Exception):
    """A mailbox read without a lock changed before the job's insert (nothing was inserted)."""


class MailboxSnapshots:
    """The mailboxes the intake read last, per process: ``JobStore._enqueue_one`` prepares a
    job from one of these and its insert checks, under the row's lock, that the mailbox is
    still the same, so an outdated one costs a second try, never a wrong job. Each is dropped
    ``seconds`` after it was read (a timer of the event loop: what a process holds of a
    mailbox's row, in memory only, is at most that old), and all of them once ``MOST`` are
    kept."""

    SECONDS = 30.0
    MOST = 10_000

    def __init__(self, seconds: float = SECONDS) -> None:
        self._seconds = seconds
        self._kept: dict[str, tuple[str, Mailbox, asyncio.TimerHandle]] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, account_id: str, mailbox_id: str) -> Mailbox | None:
        """The mailbox as last read, if it is ``account_id``'s and was read in time."""
        kept = self._kept.get(mailbox_id)
        return kept[1] if kept is not None and kept[0] == account_id else None

    def keep(self, account_id: str, mailboxes: Iterable[Mailbox]) -> None:
        loop = asyncio.get_running_loop()
        for mailbox in mailboxes:
            self.forget(mailbox.id)
            if len(self._kept) >= self.MOST:
                self.clear()
            timer = loop.call_later(self._seconds, self._kept.pop, mailbox.id, None)
            self._kept[mailbox.id] = (account_id, mailbox, timer)

    def forget(self, mailbox_id: str) -> None:
        kept = self._kept.pop(mailbox_id, None)
        if kept is not None:
            kept[2].cancel()

    def clear(self) -> None:
        for _, _, timer in self._kept.values():
            timer.cancel()
        self._kept.clear()


def _key_reused() -> Conflict:
    return Conflict(
        "this Idempotency-Key was already used for a different request",
        code="idempotency_key_reused",
    )


__all__ = ["JobFilter", "JobStore", "NewJob", "Position", "Prepare", "find_query"]
