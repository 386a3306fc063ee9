"""``mailbox_worker.lanes``: one thread beside the loop, what it admits and what it gives up."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable

import pytest

from mailbox_worker import lanes
from mailbox_worker.lanes import Lane, LaneFull, WorkAbandoned
from tests.lanes_harness import until

TAG: contextvars.ContextVar[str] = contextvars.ContextVar("tag", default="none")


def blocked(gate: threading.Event, ran: list[str], name: str) -> Callable[[], str]:
    """A work that records its name and waits for ``gate`` (at most 10 s)."""

    def work() -> str:
        ran.append(name)
        assert gate.wait(10)
        return name

    return work


async def test_a_work_runs_in_the_lanes_thread_in_the_callers_context() -> None:
    lane = Lane("test-lane")
    TAG.set("request-1")

    def work() -> tuple[str, str]:
        return threading.current_thread().name, TAG.get()

    thread, tag = await lane.run(work)

    assert thread.startswith("test-lane")
    assert thread != threading.current_thread().name
    assert tag == "request-1"
    assert (lane.held, lane.held_bytes) == (0, 0)


async def test_a_full_lane_refuses_at_once_and_admits_again_once_it_drains() -> None:
    lane = Lane("test-lane", admits_bytes=10)
    gate, ran = threading.Event(), list[str]()
    first = asyncio.ensure_future(lane.run(blocked(gate, ran, "first"), size=6))
    await until(lambda: ran == ["first"])
    small = asyncio.ensure_future(lane.run(blocked(gate, ran, "small"), size=4))
    await asyncio.sleep(0)

    with pytest.raises(LaneFull) as refused:
        await lane.run(blocked(gate, ran, "large"), size=1)

    assert refused.value.retry_after >= 1
    assert (lane.held, lane.held_bytes) == (2, 10)
    gate.set()
    assert list(await asyncio.gather(first, small)) == ["first", "small"]
    assert ran == ["first", "small"]  # the refused work never ran
    assert (lane.held, lane.held_bytes) == (0, 0)
    assert await lane.run(lambda: "again", size=10) == "again"


async def test_a_work_alone_is_admitted_whatever_its_size() -> None:
    lane = Lane("test-lane", admits_bytes=10)

    assert await lane.run(lambda: "large", size=1_000) == "large"


async def test_a_small_work_is_admitted_whatever_the_lane_holds() -> None:
    """An ordinary request refused by the validator is explained in the lane: it gets its
    400, not a 503, however many large bodies wait there."""
    lane = Lane("test-lane", admits_bytes=10, always_admits=2)
    gate, ran = threading.Event(), list[str]()
    first = asyncio.ensure_future(lane.run(blocked(gate, ran, "large"), size=10))
    await until(lambda: ran == ["large"])
    small = asyncio.ensure_future(lane.run(blocked(gate, ran, "small"), size=2))
    await asyncio.sleep(0)

    with pytest.raises(LaneFull):
        await lane.run(blocked(gate, ran, "medium"), size=3)
    assert lane.held_bytes == 12
    gate.set()
    assert list(await asyncio.gather(first, small)) == ["large", "small"]


async def test_small_works_are_admitted_while_the_lane_holds_few(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """However small, works are not admitted without end: past ``ALWAYS_ADMITTED_WORKS`` held,
    the bytes rule alone decides. A task admitted as small is not admitted again for it."""
    monkeypatch.setattr(lanes, "ALWAYS_ADMITTED_WORKS", 2)
    lane = Lane("test-lane", admits_bytes=10, always_admits=2)
    gate, ran = threading.Event(), list[str]()
    first = asyncio.ensure_future(lane.run(blocked(gate, ran, "large"), size=10))
    await until(lambda: ran == ["large"])

    async def small() -> tuple[Lane, ...]:
        await lane.run(lambda: "small", size=2)  # admitted as small: 1 work held
        return lanes._ADMITTED.get()

    second = asyncio.ensure_future(small())
    await until(lambda: lane.held == 2)
    with pytest.raises(LaneFull):
        await lane.run(lambda: "small again", size=1)  # 2 works held already
    gate.set()
    assert lane not in await second  # admitted as small: not admitted again for it
    assert await first


async def test_a_task_admitted_once_is_admitted_again() -> None:
    """A request's checks, then its message's size: once admitted, it is not refused at its
    second work, which would waste the first; another request is."""
    lane = Lane("test-lane", admits_bytes=10)
    gate, ran = threading.Event(), list[str]()
    checked, proceed = asyncio.Event(), asyncio.Event()

    async def request() -> list[str]:
        first = await lane.run(lambda: "checked", size=4)
        checked.set()
        await proceed.wait()
        second = await lane.run(lambda: "sized", size=5)
        return [first, second]

    handler = asyncio.ensure_future(request())  # a task of its own, as aiohttp's handlers
    await checked.wait()
    other = asyncio.ensure_future(lane.run(blocked(gate, ran, "other"), size=6))
    await until(lambda: ran == ["other"])
    proceed.set()
    await until(lambda: lane.held == 2)  # the handler's second work, behind the other: 11 bytes

    with pytest.raises(LaneFull):
        await lane.run(lambda: "refused", size=5)
    gate.set()
    assert await handler == ["checked", "sized"]
    assert await other == "other"


async def test_a_lane_without_a_limit_admits_every_work() -> None:
    lane = Lane("test-lane")
    gate, ran = threading.Event(), list[str]()
    works = [
        asyncio.ensure_future(lane.run(blocked(gate, ran, str(n)), size=1 << 30)) for n in range(5)
    ]
    await until(lambda: ran == ["0"])
    assert lane.held == 5
    gate.set()
    assert await asyncio.gather(*works) == ["0", "1", "2", "3", "4"]


async def test_a_waiter_that_stops_waiting_frees_its_place_only_once_its_work_is_gone() -> None:
    """A work cancelled before its turn never runs and frees its place at once; one already
    running holds its place until it ends, though its caller stopped waiting."""
    lane = Lane("test-lane", admits_bytes=10)
    gate, ran = threading.Event(), list[str]()
    running = asyncio.ensure_future(lane.run(blocked(gate, ran, "running"), size=5))
    await until(lambda: ran == ["running"])
    waiting = asyncio.ensure_future(lane.run(blocked(gate, ran, "waiting"), size=5))
    await asyncio.sleep(0)
    assert lane.held_bytes == 10

    waiting.cancel()
    await until(lambda: lane.held_bytes == 5)
    running.cancel()
    await asyncio.sleep(0.05)
    assert lane.held_bytes == 5  # still running in the thread
    gate.set()
    await until(lambda: lane.held_bytes == 0)
    assert ran == ["running"]


async def test_a_work_no_longer_wanted_at_its_turn_is_not_done() -> None:
    lane = Lane("test-lane")
    gate, ran = threading.Event(), list[str]()
    wanted = True
    first = asyncio.ensure_future(lane.run(blocked(gate, ran, "first")))
    await until(lambda: ran == ["first"])
    second = asyncio.ensure_future(lane.run(blocked(gate, ran, "second"), wanted=lambda: wanted))
    await asyncio.sleep(0)
    wanted = False  # the client hung up while the first work ran
    gate.set()

    assert await first == "first"
    with pytest.raises(WorkAbandoned):
        await second
    assert ran == ["first"]
    assert lane.held == 0


async def test_a_failing_work_raises_to_its_caller_and_frees_its_place() -> None:
    lane = Lane("test-lane", admits_bytes=10)

    def failing() -> None:
        raise ValueError("the work failed")

    with pytest.raises(ValueError, match="the work failed"):
        await lane.run(failing, size=10)
    assert (lane.held, lane.held_bytes) == (0, 0)


def test_retry_after_is_the_works_held_times_their_average_duration_within_a_minute() -> None:
    lane = Lane("test-lane")
    assert lane.retry_after() == 1  # nothing measured yet
    lane._seconds, lane.held = 2.5, 3
    assert lane.retry_after() == 8
    lane._seconds = 40.0
    assert lane.retry_after() == 60
