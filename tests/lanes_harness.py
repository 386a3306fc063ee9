"""Holding a lane beside the event loop (``mailbox_worker/lanes.py``) from a test, and waiting
for what its thread does, without sleeping for a guessed time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from mailbox_worker.lanes import Lane

DEADLINE = 10.0
"""Seconds a wait may take before the test fails (a stuck lane, not a slow machine)."""


async def until(condition: Callable[[], bool]) -> None:
    """Return once ``condition()`` holds, asking it every millisecond; fail after
    ``DEADLINE``."""
    async with asyncio.timeout(DEADLINE):
        while not condition():
            await asyncio.sleep(0.001)


async def occupy(lane: Lane, gate: threading.Event, size: int = 1) -> asyncio.Future[bool]:
    """A work of ``size`` bytes holding ``lane`` until ``gate`` is set, started; its result
    says whether the gate was set in time."""
    started = threading.Event()

    def hold() -> bool:
        started.set()
        return gate.wait(DEADLINE)

    held = asyncio.ensure_future(lane.run(hold, size=size))
    await until(started.is_set)
    return held
