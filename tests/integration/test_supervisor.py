"""The ``serve --workers`` supervisor over real child processes: it restarts one that ended,
gives up (and stops) when they keep ending, and forwards SIGTERM so that each child drains."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tenacity import wait_none

from mailbox_worker.cli.serve import Child, Supervisor

CRASH_ONCE = """
import pathlib, signal, sys, time
folder = pathlib.Path(sys.argv[1])
if not (folder / "crashed").exists():
    (folder / "crashed").write_text("")
    sys.exit(1)
def drain(*_):
    (folder / "drained").write_text("")
    sys.exit(0)
signal.signal(signal.SIGTERM, drain)
(folder / "running").write_text("")
while True:
    time.sleep(0.05)
"""

END_ONCE_RUNNING = """
import pathlib, sys, time
while not (pathlib.Path(sys.argv[1]) / "running").exists():
    time.sleep(0.05)
sys.exit(3)
"""
"""Ends with status 3 once the other child runs (and so will drain when stopped)."""


async def wait_for_file(path: Path) -> None:
    async with asyncio.timeout(30):
        while not path.exists():
            await asyncio.sleep(0.05)


async def test_restarts_a_child_that_ended_and_forwards_sigterm(tmp_path: Path) -> None:
    child = Child(0, [sys.executable, "-c", CRASH_ONCE, str(tmp_path)], {})
    supervisor = Supervisor([child], shutdown_grace=5.0, restart_backoff=wait_none())
    stop = asyncio.Event()
    running = asyncio.create_task(supervisor.run(stop))
    await wait_for_file(tmp_path / "running")
    assert (tmp_path / "crashed").exists()
    stop.set()
    async with asyncio.timeout(30):
        await running
    assert (tmp_path / "drained").exists()
    assert not supervisor.gave_up


async def test_gives_up_and_stops_when_children_keep_ending(tmp_path: Path) -> None:
    ending = Child(0, [sys.executable, "-c", END_ONCE_RUNNING, str(tmp_path)], {})
    staying = Child(1, [sys.executable, "-c", CRASH_ONCE, str(tmp_path)], {})
    (tmp_path / "crashed").write_text("")  # the second child runs until stopped
    supervisor = Supervisor(
        [ending, staying], shutdown_grace=5.0, restart_backoff=wait_none(), max_crashes=2
    )
    stop = asyncio.Event()
    async with asyncio.timeout(60):
        await supervisor.run(stop)
    assert supervisor.gave_up
    assert stop.is_set()
    assert (tmp_path / "drained").exists()  # the healthy child was stopped too
