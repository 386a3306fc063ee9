"""``Coalescer``: writes that arrive while a batch is on its way go together in the next one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from mailbox_worker.jobs.coalescing import Coalescer


class Recorder:
    """A flush that records its batches and, while ``gate`` is closed, waits for it."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def flush(self, items: Sequence[str]) -> list[str]:
        self.batches.append(list(items))
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return [f"done {item}" for item in items]


def job_of(item: str) -> str:
    return item.split("/")[0]


async def test_a_lone_write_goes_at_once_and_gets_its_answer() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush, key=job_of)
    assert await coalescer.submit("a/1") == "done a/1"
    assert recorder.batches == [["a/1"]]


async def test_writes_arriving_during_a_flush_go_together_next() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    coalescer = Coalescer(recorder.flush, key=job_of)
    first = asyncio.create_task(coalescer.submit("a/1"))
    await asyncio.sleep(0)  # the first batch leaves, alone
    others = [asyncio.create_task(coalescer.submit(f"{name}/1")) for name in "bcd"]
    await asyncio.sleep(0)
    recorder.gate.set()
    assert await first == "done a/1"
    assert [await task for task in others] == ["done b/1", "done c/1", "done d/1"]
    assert recorder.batches == [["a/1"], ["b/1", "c/1", "d/1"]]


async def test_one_jobs_writes_never_share_a_batch_and_keep_their_order() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    coalescer = Coalescer(recorder.flush, key=job_of, most=2)
    tasks = [asyncio.create_task(coalescer.submit(item)) for item in ("a/1", "a/2", "b/1", "c/1")]
    await asyncio.sleep(0)
    recorder.gate.set()
    await asyncio.gather(*tasks)
    assert recorder.batches == [["a/1", "b/1"], ["a/2", "c/1"]]


async def test_a_failed_batch_fails_each_of_its_callers() -> None:
    recorder = Recorder()
    recorder.fail = RuntimeError("database away")
    coalescer = Coalescer(recorder.flush, key=job_of)
    results = await asyncio.gather(
        coalescer.submit("a/1"), coalescer.submit("b/1"), return_exceptions=True
    )
    assert [str(result) for result in results] == ["database away", "database away"]
    recorder.fail = None
    assert await coalescer.submit("a/1") == "done a/1"  # the next batch is sent as usual


async def test_a_caller_cancelled_before_its_batch_left_is_not_written() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    coalescer = Coalescer(recorder.flush, key=job_of)
    first = asyncio.create_task(coalescer.submit("a/1"))
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(coalescer.submit("b/1"))
    kept = asyncio.create_task(coalescer.submit("c/1"))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    recorder.gate.set()
    assert (await first, await kept) == ("done a/1", "done c/1")
    assert recorder.batches == [["a/1"], ["c/1"]]


async def test_a_write_submitted_as_its_answer_arrives_is_sent() -> None:
    # The sender has ended by the time its caller resumes: the next write must start another.
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush, key=job_of)

    async def twice() -> str:
        await coalescer.submit("a/1")
        return await coalescer.submit("a/2")

    assert await asyncio.wait_for(twice(), timeout=5) == "done a/2"
    assert recorder.batches == [["a/1"], ["a/2"]]


async def test_with_two_senders_a_write_waits_only_once_both_are_busy() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    coalescer = Coalescer(recorder.flush, key=job_of, senders=2)
    first = asyncio.create_task(coalescer.submit("a/1"))
    await asyncio.sleep(0)
    second = asyncio.create_task(coalescer.submit("b/1"))
    await asyncio.sleep(0)  # the second caller starts a sender...
    await asyncio.sleep(0)  # ...which takes its write
    assert recorder.batches == [["a/1"], ["b/1"]]  # both on their way at once
    later = [asyncio.create_task(coalescer.submit(f"{name}/1")) for name in "cd"]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(recorder.batches) == 2  # they wait for a sender
    recorder.gate.set()
    assert await asyncio.gather(first, second, *later) == [
        "done a/1",
        "done b/1",
        "done c/1",
        "done d/1",
    ]
    assert recorder.batches == [["a/1"], ["b/1"], ["c/1", "d/1"]]


async def test_a_batch_holds_at_most_most_size_but_always_its_first_item() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    sizes = {"a/1": 1, "big/1": 50, "b/1": 6, "c/1": 3, "d/1": 2}
    coalescer = Coalescer(recorder.flush, key=job_of, size=sizes.__getitem__, most_size=10)
    first = asyncio.create_task(coalescer.submit("a/1"))
    await asyncio.sleep(0)
    others = [
        asyncio.create_task(coalescer.submit(item)) for item in ("big/1", "b/1", "c/1", "d/1")
    ]
    await asyncio.sleep(0)
    recorder.gate.set()
    await asyncio.gather(first, *others)
    # "big/1" alone (a first item goes whatever its size); then 6 + 3 (2 more would be 11).
    assert recorder.batches == [["a/1"], ["big/1"], ["b/1", "c/1"], ["d/1"]]
