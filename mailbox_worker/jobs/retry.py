"""When to try a job again: tenacity's exponential backoff with jitter, persisted as run_after."""

from __future__ import annotations

from tenacity import wait_exponential_jitter

from mailbox_worker.config import WorkerSettings
from mailbox_worker.errors import TransientError
from mailbox_worker.periodic import wait_seconds


def backoff_delay(failures: int, settings: WorkerSettings) -> float:
    """Seconds to wait after the ``failures``-th transient failure (1-based)."""
    strategy = wait_exponential_jitter(
        multiplier=settings.retry_initial, max=settings.retry_max, jitter=settings.retry_initial
    )
    return wait_seconds(strategy, failures)


def retry_delay(error: TransientError, failures: int, settings: WorkerSettings) -> float:
    """The provider's ``Retry-After`` when it gave one (never less), else our backoff."""
    backoff = backoff_delay(failures, settings)
    if error.retry_after is not None:
        return max(float(error.retry_after), 0.0)
    return backoff
