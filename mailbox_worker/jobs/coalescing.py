"""Writes that arrive together go to the database together: ``Coalescer``.

Each job's task records its own step (``JobQueue.start_attempt``, ``finish``...) and waits for
its own answer, but many tasks finish at about the same time. A ``Coalescer`` sends the first
write at once and, while that one is on its way, gathers those that arrive; when it returns,
it sends everything gathered as one batch (one statement on PostgreSQL, one transaction on
SQLite). A lone write waits for nothing; under load, one commit carries many state changes
instead of each paying its own (group commit, done where the writes are known).

A caller cancelled before its write left is taken out of the batch, so nothing is written for
it; once its batch has left, the write happens as it would have without the batching.

With ``senders`` above one, that many batches may be on their way at once, each taking what
has gathered when it starts: a write waits only once all of them are busy. Writes of one key
then keep their order only within a batch, so that is for writes that do not depend on one
another (the enqueue of new jobs: ``JobStore``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar, cast

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    def __init__(
        self,
        flush: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
        key: Callable[[Item], Hashable],
        most: int = 500,
        senders: int = 1,
        size: Callable[[Item], int] | None = None,
        most_size: int = 0,
    ) -> None:
        """``flush(items)`` writes a batch and answers for each item, in order; a batch holds
        at most ``most`` items and never two with the same ``key`` (those wait for the next
        batch, so that, with one sender, one job's writes stay in order); at most
        ``senders`` batches are written at once. With ``size``, a batch also holds items of
        at most ``most_size`` in all, except that its first item goes whatever its size."""
        self._flush = flush
        self._key = key
        self._most = most
        self._senders = senders
        self._size = size
        self._most_size = most_size
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        """``item``'s answer once its batch is written; its batch's exception if that failed."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        entry = (item, future)
        self._pending.append(entry)
        if len(self._sending) < self._senders:
            self._sending.add(asyncio.create_task(self._send()))
        try:
            return await future
        except asyncio.CancelledError:
            if entry in self._pending:  # not sent yet: it never will be
                self._pending.remove(entry)
            raise

    async def _send(self) -> None:
        try:
            while self._pending:
                batch = self._take()
                try:
                    results = await self._flush([item for item, _ in batch])
                except Exception as error:  # every caller gets it, to retry or report
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                except BaseException:
                    for _, future in batch:
                        future.cancel()
                    raise
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            # At once, not in a done callback: a write submitted from now on starts a sender.
            self._sending.discard(cast("asyncio.Task[None]", asyncio.current_task()))
            if not self._sending:
                for _, future in self._pending:  # only when the last sender was cancelled
                    future.cancel()
                self._pending = []

    def _take(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        keys: set[Hashable] = set()
        waiting = []
        total = 0
        for entry in self._pending:
            key = self._key(entry[0])
            size = 0 if self._size is None else self._size(entry[0])
            fits = not batch or self._size is None or total + size <= self._most_size
            if len(batch) < self._most and key not in keys and fits:
                keys.add(key)
                batch.append(entry)
                total += size
            else:
                waiting.append(entry)
        self._pending = waiting
        return batch


__all__ = ["Coalescer"]
