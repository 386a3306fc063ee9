"""What every job transition shares: the outcome of an attempt, how an ``unknown`` job is
settled, the job event each transition writes, and the guarded per-job move.

Job states (``states.JobState``, docs/architecture.md#job-states): ``queued → running → sent |
drafted``; ``running → queued`` (retry); ``running → failed``; ``queued|running → held``
(mailbox needs consent) ``→ queued``; ``queued|held → cancelled``; ``running → unknown``;
``unknown → sent | queued | cancelled`` only when a client or operator settles it.
Every transition is one guarded ``UPDATE … WHERE state IN (…)`` plus one ``job_events`` row
in the same transaction, so a transition happens at most once even when two workers race.
Every transition writes ``last_error_code`` and ``last_error_message`` together (both set,
or both cleared), so a job never shows one attempt's code beside another's message.
Every entry into one of ``ANNOUNCED_STATES`` also adds, in that same transaction, the
``job.<state>`` outbox event for the invoicing app (``announce``; docs/server.md#events);
a settlement of an ``unknown`` job is announced as ``job.settled`` instead.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailbox_worker.db.models import Job, JobEvent, keyed_state
from mailbox_worker.events.outbox import outbox_row
from mailbox_worker.states import TERMINAL, JobState


def message_id_for(job_id: str, domain: str) -> str:
    """The deterministic ``Message-ID`` of a job's message: the same on every attempt."""
    return f"<{job_id}@{domain}>"


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


def job_event(
    at: dt.datetime,
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
    """The ``job_events`` row recording one step of a job's history."""
    return JobEvent(
        job_id=job_id,
        at=at,
        kind=kind,
        from_state=from_state,
        to_state=to_state,
        code=code,
        detail=detail,
        provider_status=provider_status,
        worker=worker,
    )


ANNOUNCED_STATES: frozenset[JobState] = frozenset(
    {
        JobState.SENT,
        JobState.DRAFTED,
        JobState.FAILED,
        JobState.UNKNOWN,
        JobState.CANCELLED,
        JobState.HELD,
    }
)
"""The states whose every entry the invoicing app is told of, as ``job.<state>``."""


def announce(
    session: AsyncSession, job: Job, state: str, code: str | None, at: dt.datetime
) -> None:
    """Add to ``session``'s transaction the ``job.<state>`` outbox event announcing that
    ``job`` entered ``state`` with ``code`` — when ``state`` is one of ``ANNOUNCED_STATES``;
    nothing otherwise.

    Call it after the guarded update that moved the job (its row lock orders one job's
    events, see ``events.outbox.outbox_row``) and only if the update moved it. The payload
    holds ids, the client's ``reference``, the state and its code, and the provider's ids
    known so far (None when not): never content or addresses.
    """
    if state not in ANNOUNCED_STATES:
        return
    payload = {
        "job_id": job.id,
        "mailbox_id": job.mailbox_id,
        "reference": job.reference,
        "state": str(state),
        "code": code,
        "provider_message_id": job.provider_message_id,
        "provider_draft_id": job.provider_draft_id,
    }
    session.add(outbox_row(job.account_id, f"job.{state}", payload, at))


def held_by(job_id: str, worker: str) -> ColumnElement[bool]:
    """The job is ``running`` under ``worker``'s lease: the guard of every worker update."""
    return and_(Job.id == job_id, keyed_state() == JobState.RUNNING, Job.lease_owner == worker)


async def move_each(
    session: AsyncSession,
    where: ColumnElement[bool],
    to_state: str,
    code: str,
    message: str,
    now: dt.datetime,
) -> int:
    """Move each job matching ``where`` (rows another transaction holds are skipped) from
    the state it is in to ``to_state``, with ``code`` and ``message`` as its last error:
    one update guarded by that state and one event a job, in ``session``'s transaction.
    Returns how many."""
    terminal = {"finished_at": now} if to_state in TERMINAL else {}
    jobs = list(
        (await session.scalars(select(Job).where(where).with_for_update(skip_locked=True))).all()
    )
    for job in jobs:
        state = job.state
        await session.execute(
            update(Job)
            .where(Job.id == job.id, keyed_state() == state)
            .values(
                state=to_state,
                updated_at=now,
                last_error_code=code,
                last_error_message=message,
                **terminal,
            )
            .execution_options(synchronize_session=False)
        )
        session.add(job_event(now, job.id, "state", state, to_state, code=code, detail=message))
        announce(session, job, to_state, code, now)
    return len(jobs)


__all__ = [
    "ANNOUNCED_STATES",
    "CANCEL_UNKNOWN",
    "JOB_SETTLED",
    "RESOLVE",
    "RETRY",
    "SETTLEMENTS",
    "Outcome",
    "Settlement",
    "announce",
    "held_by",
    "job_event",
    "message_id_for",
    "move_each",
]
