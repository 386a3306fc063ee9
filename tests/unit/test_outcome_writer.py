"""``OutcomeWriter``: an outcome the database cannot take is kept, retried and counted; a
worker that stops first abandons it, counted and logged."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry
from tenacity import RetryCallState, wait_fixed, wait_none
from tenacity.wait import wait_base

from mailbox_worker.errors import DatabaseUnavailable
from mailbox_worker.jobs.outcomes import OutcomeWriter
from mailbox_worker.jobs.queue import Lease
from mailbox_worker.prometheus import PrometheusTelemetry

LEASE = Lease("job_1", "w1", "w1/abc")


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_a_failed_write_is_retried_until_it_answers() -> None:
    registry = CollectorRegistry()
    writer = OutcomeWriter(PrometheusTelemetry(registry), backoff=wait_none())
    errors: list[Exception] = [DatabaseUnavailable("away"), RuntimeError("a bug")]
    pending_seen: list[int] = []

    async def write() -> bool:
        if errors:
            pending_seen.append(writer.pending)
            raise errors.pop(0)
        pending_seen.append(writer.pending)
        return True

    assert await writer.write(LEASE, "sent", write) is True
    assert pending_seen == [0, 1, 1]  # kept in memory from the first failure on
    assert writer.pending == 0
    assert sample(registry, "mailbox_worker_loop_errors_total", loop="outcome_write") == 2
    assert sample(registry, "mailbox_worker_outcome_flushes_total", result="written") == 1
    assert sample(registry, "mailbox_worker_pending_outcomes") == 0


async def test_a_write_that_answers_at_once_is_not_counted_as_pending() -> None:
    registry = CollectorRegistry()
    writer = OutcomeWriter(PrometheusTelemetry(registry), backoff=wait_none())

    async def lost() -> bool:
        return False

    assert await writer.write(LEASE, "sent", lost) is False
    assert sample(registry, "mailbox_worker_outcome_flushes_total", result="lease_lost") == 0


async def test_stopping_abandons_a_pending_outcome_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    writer = OutcomeWriter(PrometheusTelemetry(registry))
    tried = asyncio.Event()

    async def away() -> bool:
        tried.set()
        raise DatabaseUnavailable("away")

    task = asyncio.create_task(writer.write(LEASE, "sent", away))
    await tried.wait()
    await asyncio.sleep(0)  # let it reach its backoff
    assert writer.pending == 1
    task.cancel()
    with caplog.at_level(logging.ERROR), pytest.raises(asyncio.CancelledError):
        await task
    assert writer.pending == 0
    assert sample(registry, "mailbox_worker_outcome_flushes_total", result="abandoned") == 1
    assert sample(registry, "mailbox_worker_pending_outcomes") == 0
    assert "job_1: outcome sent could not be written" in caplog.text


async def test_the_database_answering_cuts_the_backoff_short() -> None:
    registry = CollectorRegistry()
    # An hour between tries: only the database answering elsewhere gets the write done.
    writer = OutcomeWriter(PrometheusTelemetry(registry), backoff=wait_fixed(3600))
    failures = 3

    async def write() -> bool:
        nonlocal failures
        if failures:
            failures -= 1
            raise DatabaseUnavailable("away")
        return True

    task = asyncio.create_task(writer.write(LEASE, "sent", write))
    async with asyncio.timeout(20):  # a hang guard, not a performance assertion
        while not task.done():
            writer.database_answered()
            await asyncio.sleep(0)
    assert task.result() is True


async def test_the_waits_count_the_first_try_as_the_first_attempt() -> None:
    """The first try runs outside tenacity; its failure is still attempt 1, so the backoff
    after it is the first wait (0.2 s with the default), not the second."""
    asked: list[int] = []

    class Recorded(wait_base):
        def __call__(self, retry_state: RetryCallState) -> float:
            asked.append(retry_state.attempt_number)
            return 0.0

    writer = OutcomeWriter(PrometheusTelemetry(CollectorRegistry()), backoff=Recorded())
    failures = [DatabaseUnavailable("away"), DatabaseUnavailable("still away")]
    tries = 0

    async def write() -> bool:
        nonlocal tries
        tries += 1
        if failures:
            raise failures.pop(0)
        return True

    assert await writer.write(LEASE, "sent", write) is True
    assert tries == 3
    assert asked == [1, 2]


async def test_a_bug_after_an_outage_is_logged_as_a_bug_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first try's failure (the database away) is not the context of a later one: a bug on
    the second try is an error with its traceback, not a "database unavailable" warning."""
    writer = OutcomeWriter(PrometheusTelemetry(CollectorRegistry()), backoff=wait_none())
    errors: list[Exception] = [DatabaseUnavailable("away"), RuntimeError("a bug")]

    async def write() -> bool:
        if errors:
            raise errors.pop(0)
        return True

    with caplog.at_level(logging.WARNING, logger="mailbox_worker"):
        assert await writer.write(LEASE, "sent", write) is True
    outage, bug = (r for r in caplog.records if "outcome_write" in r.getMessage())
    assert outage.levelno == logging.WARNING and "database unavailable" in outage.getMessage()
    assert bug.levelno == logging.ERROR
    assert "unexpected RuntimeError" in bug.getMessage()
    assert "in write" in bug.getMessage()  # its (redacted) traceback
