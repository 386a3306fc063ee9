"""A delivery's progress that cannot be recorded stops it as retryable: nothing was sent."""

from __future__ import annotations

from typing import cast

import pytest
from sqlalchemy.exc import OperationalError

from mailbox_worker.errors import TransientError
from mailbox_worker.jobs.progress import JobProgress, LeaseLost
from mailbox_worker.jobs.queue import JobQueue, Lease
from mailbox_worker.jobs.transitions import Outcome

LEASE = Lease("job_1", "w1", "w1/abc")


class FailingQueue:
    """A queue whose writes raise ``error`` (or answer ``held`` when it is None)."""

    def __init__(self, error: Exception | None, held: bool = True) -> None:
        self.error = error
        self.held = held

    async def start_attempt(self, lease: Lease) -> bool:
        if self.error is not None:
            raise self.error
        return self.held

    async def record_provider_ids(self, lease: Lease, outcome: Outcome) -> bool:
        return await self.start_attempt(lease)


def progress_over(queue: FailingQueue) -> JobProgress:
    return JobProgress(cast(JobQueue, queue), LEASE)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (OperationalError("UPDATE jobs", {}, ConnectionRefusedError()), "database_unavailable"),
        (RuntimeError("a bug"), "internal_error"),
    ],
    ids=["outage", "bug"],
)
async def test_a_write_that_fails_before_sending_is_a_transient_error(
    error: Exception, code: str
) -> None:
    progress = progress_over(FailingQueue(error))
    for step in (
        progress.about_to_send(),
        progress.draft_created("d"),
        progress.draft_completed("d"),
    ):
        with pytest.raises(TransientError) as raised:
            await step
        assert raised.value.code == code
        assert raised.value.__cause__ is error
    assert not progress.in_flight


async def test_a_lost_lease_is_not_a_transient_error() -> None:
    progress = progress_over(FailingQueue(None, held=False))
    with pytest.raises(LeaseLost):
        await progress.about_to_send()
    progress = progress_over(FailingQueue(None, held=True))
    await progress.about_to_send()
    assert progress.in_flight
