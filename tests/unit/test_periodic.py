"""``Periodic``: a failed pass is counted and logged, and the loop goes on."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry

from mailbox_worker.errors import DatabaseUnavailable
from mailbox_worker.periodic import Periodic
from mailbox_worker.prometheus import PrometheusTelemetry

SECRET = "secret" + "@contoso.example"  # built, so a traceback's source line cannot show it


async def test_failed_passes_are_counted_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    stop = asyncio.Event()
    failures: list[Exception] = [
        RuntimeError(SECRET),
        DatabaseUnavailable("away"),
    ]
    passes = 0

    async def step() -> None:
        nonlocal passes
        passes += 1
        if failures:
            raise failures.pop(0)
        stop.set()  # the third pass succeeds, and is the last

    loop = Periodic(
        "test loop",
        step,
        0.0,
        name="test",
        telemetry=PrometheusTelemetry(registry),
        database_unavailable=lambda error: isinstance(error, DatabaseUnavailable),
    )
    with caplog.at_level(logging.WARNING, logger="mailbox_worker.periodic"):
        async with asyncio.timeout(20):  # a hang guard, not a performance assertion
            await loop.run(stop)

    assert passes == 3
    assert registry.get_sample_value("mailbox_worker_loop_errors_total", {"loop": "test"}) == 2
    assert (loop.failures, loop.last_success is not None) == (0, True)
    unexpected, outage = caplog.records
    assert (unexpected.levelno, outage.levelno) == (logging.ERROR, logging.WARNING)
    assert "builtins.RuntimeError (message withheld)" in unexpected.getMessage()
    assert SECRET not in caplog.text
    assert outage.getMessage() == "test: database unavailable (DatabaseUnavailable); will try again"


async def test_without_telemetry_a_failed_pass_is_still_logged_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def step() -> None:
        raise RuntimeError(SECRET)

    loop = Periodic("test loop", step, 5.0)
    with caplog.at_level(logging.ERROR, logger="mailbox_worker.periodic"):
        assert await loop.run_once() == 5.0
    assert loop.failures == 1
    assert "test loop: unexpected RuntimeError" in caplog.text
    assert SECRET not in caplog.text
