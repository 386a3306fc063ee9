"""When to try a job again: tenacity's exponential backoff with jitter, persisted as run_after."""

from __future__ import annotations

from typing import Protocol

from tenacity import wait_exponential_jitter

from mailbox_worker.errors import TransientError
from mailbox_worker.periodic import wait_seconds


class BackoffSettings(Protocol):
    """The part of the worker's settings the backoff reads (``WorkerSettings`` has it)."""

    @property
    def retry_initial(self) -> float: ...

    @property
    def retry_max(self) -> float: ...


def backoff_delay(failures: int, settings: BackoffSettings) -> float:
    """Seconds to wait after the ``failures``-th transient failure (1-based)."""
    strategy = wait_exponential_jitter(
        multiplier=settings.retry_initial, max=settings.retry_max, jitter=settings.retry_initial
    )
    return wait_seconds(strategy, failures)


def retry_delay(error: TransientError, failures: int, settings: BackoffSettings) -> float:
    """The provider's ``Retry-After`` when it gave one (exactly that, not our longer backoff:
    throttling is not a failure of ours), else our backoff."""
    if error.retry_after is not None:
        return max(float(error.retry_after), 0.0)
    return backoff_delay(failures, settings)
