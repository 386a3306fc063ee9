from __future__ import annotations

from mailbox_worker.config import WorkerSettings
from mailbox_worker.errors import Throttled, TransientError
from mailbox_worker.jobs.retry import backoff_delay, retry_delay

SETTINGS = WorkerSettings(retry_initial=5.0, retry_max=600.0)


def test_backoff_grows_exponentially_within_jitter_and_cap() -> None:
    for failures in range(1, 12):
        delay = backoff_delay(failures, SETTINGS)
        base = min(5.0 * 2 ** (failures - 1), 600.0)
        assert min(base, 600.0) <= delay <= min(base + 5.0, 600.0)


def test_later_failures_wait_longer_on_average() -> None:
    early = sum(backoff_delay(1, SETTINGS) for _ in range(50)) / 50
    late = sum(backoff_delay(5, SETTINGS) for _ in range(50)) / 50
    assert late > early * 4


def test_retry_after_from_the_provider_wins() -> None:
    assert retry_delay(Throttled("slow down", retry_after=42.0), 1, SETTINGS) == 42.0
    plain = retry_delay(TransientError("network"), 1, SETTINGS)
    assert 5.0 <= plain <= 10.0
