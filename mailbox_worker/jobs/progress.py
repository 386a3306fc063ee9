"""How far a job's delivery got, recorded as the provider reports it (``DeliveryProgress``).

A delivery may take several provider requests (a draft, its uploads, the draft's send). The
ids the provider returns are stored on the job as soon as they exist, so that an attempt that
resumes after a crash or a retry reuses the draft instead of creating a second one:

* ``draft_created(id)`` stores ``provider_draft_id``;
* ``draft_completed(id)`` stores the same id as ``provider_message_id``: the whole message is
  at the provider, and a resumed attempt sends that draft as it is (``draft_complete``);
* ``about_to_send()`` marks the job in flight (``JobQueue.start_attempt``) just before the
  request that can deliver it. Until then a crash only requeues the job (``lease_expired``);
  from then on it becomes ``unknown`` (``worker_lost``), never sent twice
  (docs/architecture.md#job-states).

Each hook writes under the worker's lease; if the lease is gone it raises ``LeaseLost`` and
the delivery stops before its next request. If the write itself fails (the database is
unreachable), the hook raises ``TransientError`` (``database_unavailable``, else
``internal_error``): nothing has left yet, so the job is retried, never left ``unknown``.
"""

from __future__ import annotations

from collections.abc import Awaitable

from mailbox_worker.db.models import Job
from mailbox_worker.db.outage import is_database_unavailable
from mailbox_worker.errors import TransientError
from mailbox_worker.jobs.queue import JobQueue, Lease
from mailbox_worker.jobs.transitions import Outcome
from mailbox_worker.states import JobState


class LeaseLost(Exception):
    """The worker no longer holds the job: another worker or lease recovery owns it now."""


def recorded_draft(job: Job) -> tuple[str | None, bool]:
    """``(draft id, whether it is complete)`` as an earlier attempt recorded them."""
    draft_id = job.provider_draft_id
    return draft_id, draft_id is not None and job.provider_message_id == draft_id


class JobProgress:
    """The ``DeliveryProgress`` of one job under one claim's ``lease``."""

    def __init__(self, queue: JobQueue, lease: Lease) -> None:
        self._queue = queue
        self._lease = lease
        self.in_flight = False
        """Whether ``about_to_send`` marked the job in flight."""

    async def draft_created(self, draft_id: str) -> None:
        """Store the draft's id before anything else is added to it."""
        await self._record(Outcome(JobState.RUNNING, provider_draft_id=draft_id))

    async def draft_completed(self, draft_id: str) -> None:
        """Store that the draft holds the whole message."""
        await self._record(Outcome(JobState.RUNNING, provider_message_id=draft_id))

    async def about_to_send(self) -> None:
        """Mark the job in flight; raise ``LeaseLost`` rather than let the request leave."""
        if not await _written(self._queue.start_attempt(self._lease)):
            raise LeaseLost(self._lease.job_id)
        self.in_flight = True

    async def _record(self, ids: Outcome) -> None:
        if not await _written(self._queue.record_provider_ids(self._lease, ids)):
            raise LeaseLost(self._lease.job_id)


async def _written(write: Awaitable[bool]) -> bool:
    """The write's answer; a failure to write becomes a ``TransientError`` (nothing was sent)."""
    try:
        return await write
    except Exception as error:
        code = "database_unavailable" if is_database_unavailable(error) else "internal_error"
        raise TransientError(
            "the job's progress could not be recorded before sending; nothing was sent",
            code=code,
        ) from error


__all__ = ["JobProgress", "LeaseLost", "recorded_draft"]
