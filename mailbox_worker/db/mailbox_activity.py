"""What an operator may see of a mailbox's jobs without a support grant (docs/privacy.md
PP-3): how many are in each state and the last stable error code, never their content.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailbox_worker.db.models import Job
from mailbox_worker.states import JobState


@dataclass(frozen=True)
class MailboxActivity:
    """A mailbox's jobs in numbers: every ``JobState`` counted (0 when none), and the error
    code of the job that failed or was deferred most recently (None when none has)."""

    jobs_by_state: dict[str, int]
    last_error_code: str | None
    last_error_at: dt.datetime | None


class MailboxActivityStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def activity(self, mailbox_id: str) -> MailboxActivity:
        """The mailbox's job counts and last error code, from two reads of the job table."""
        # One grouped count of the mailbox's jobs by state.
        counts_query = (
            select(Job.state, func.count()).where(Job.mailbox_id == mailbox_id).group_by(Job.state)
        )
        # The most recently updated job of the mailbox that carries an error code.
        last_error_query = (
            select(Job.last_error_code, Job.updated_at)
            .where(Job.mailbox_id == mailbox_id, Job.last_error_code.is_not(None))
            .order_by(Job.updated_at.desc(), Job.id.desc())
            .limit(1)
        )
        async with self._sessions() as session:
            rows = (await session.execute(counts_query)).all()
            last_error = (await session.execute(last_error_query)).first()
        counts = {state.value: 0 for state in JobState}
        counts.update({str(state): int(count) for state, count in rows})
        return MailboxActivity(
            counts,
            None if last_error is None else last_error[0],
            None if last_error is None else last_error[1],
        )
