"""Wake-ups: how a worker learns that a job became due, without polling for it.

On PostgreSQL, the transaction that makes a job due also sends ``NOTIFY mailbox_worker_jobs``
(``announce_in``: ``pg_notify`` inside that transaction, so the notification leaves only if
it commits), and every worker process holds one connection of its own, outside the pool,
that ``LISTEN``s on the channel (``DueListener``) and wakes its worker. That connection
reconnects with backoff when it drops; meanwhile, and for what no notification announces (a
``run_after`` in the future, a mailbox's pause ending, a mailbox slot freed in another
process), the worker still looks on its own: it sleeps until the next queued job is due (as
its last claim saw it: ``ClaimBatch.next_due``), and never longer than
``worker.poll_interval`` (``idle_seconds``). Behind a transaction-mode
pooler a session-long ``LISTEN`` is not possible, so there it only polls.

On SQLite the daemon is one process: the intake wakes its worker in-process
(``Worker.wake``), and ``announce_in`` does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from tenacity import wait_exponential

from mailbox_worker.periodic import wait_seconds

log = logging.getLogger(__name__)

CHANNEL = "mailbox_worker_jobs"
"""The PostgreSQL notification channel of due jobs; the payload is the sending process
(``origin``), whose own listener ignores it: that process wakes its worker in-process."""


def origin() -> str:
    """This process, as notifications name their sender: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


_NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', :origin)")
CHECK_INTERVAL = 30.0
CHECK_TIMEOUT = 5.0
"""Every ``CHECK_INTERVAL`` seconds the listening connection must answer within
``CHECK_TIMEOUT``, or it is replaced."""
RECONNECT_BACKOFF = wait_exponential(multiplier=0.5, max=30.0)
"""Waits between attempts to get the listening connection back: 0.5 s, 1 s, 2 s... 30 s."""


async def announce_in(session: AsyncSession) -> None:
    """Within ``session``'s open transaction, tell every listening worker that a job is, or
    will be, due; sent on commit, dropped on rollback. Nothing on SQLite."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(_NOTIFY, {"origin": origin()})


async def announce(engine: AsyncEngine) -> None:
    """``announce_in`` in a transaction of its own, for changes already committed (jobs
    handed back, leases recovered)."""
    if engine.dialect.name != "postgresql":
        return
    async with engine.begin() as connection:
        await connection.execute(_NOTIFY, {"origin": origin()})


def idle_seconds(due: dt.datetime | None, now: dt.datetime, poll_interval: float) -> float:
    """How long an idle worker sleeps: until ``due`` (the next job's due time), never longer
    than ``poll_interval``, never less than nothing."""
    if due is None:
        return poll_interval
    return max(0.0, min(poll_interval, (due - now).total_seconds()))


def listen_dsn(url: str) -> str | None:
    """The asyncpg DSN of a PostgreSQL SQLAlchemy ``url`` (None for any other database)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return None
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


class DueListener:
    """Holds a ``LISTEN`` connection on ``CHANNEL`` and calls ``on_due`` for each notification
    another process sent (this process wakes its own worker when it makes a job due).

        ``on_due`` is also called each time the connection is (re)established, since whatever
        was announced while it was down was missed. ``listening`` says whether it is up now.
    """

    def __init__(
        self,
        dsn: str,
        on_due: Callable[[], None],
        *,
        connect: Callable[[str], Any] = asyncpg.connect,
        own_origin: str | None = None,
    ) -> None:
        """``own_origin``: the sender whose notifications are ignored (this process)."""
        self._dsn = dsn
        self._on_due = on_due
        self._connect = connect
        self._origin = own_origin or origin()
        self.listening = False

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until ``stop`` is set, reconnecting with backoff whenever the connection
        drops or cannot be made."""
        failures = 0
        while not stop.is_set():
            try:
                await self._listen_once(stop)
                failures = 0
            except Exception as error:  # never ends: the worker polls meanwhile
                failures += 1
                log.warning(
                    "job notifications: no listening connection (%s); polling until it is back",
                    type(error).__name__,
                )
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    stop.wait(), wait_seconds(RECONNECT_BACKOFF, max(failures, 1))
                )

    async def _listen_once(self, stop: asyncio.Event) -> None:
        connection = await self._connect(self._dsn)
        lost = asyncio.Event()
        try:
            connection.add_termination_listener(lambda _connection: lost.set())
            await connection.add_listener(CHANNEL, self._notified)
            self.listening = True
            log.info("job notifications: listening")
            self._on_due()
            while not stop.is_set():
                waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())]
                try:
                    await asyncio.wait(
                        waiters, timeout=CHECK_INTERVAL, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    for waiter in waiters:
                        waiter.cancel()
                if lost.is_set() and not stop.is_set():
                    raise ConnectionError("the listening connection was closed")
                if not stop.is_set():
                    # A connection can die without a word (a dropped route): ask it.
                    await asyncio.wait_for(connection.execute("SELECT 1"), CHECK_TIMEOUT)
        finally:
            self.listening = False
            await _close(connection)

    def _notified(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        if payload != self._origin:
            self._on_due()


async def _close(connection: Any) -> None:
    """Close the listening connection politely within 5 s, else (an answer that never comes,
    or this task cancelled meanwhile) drop its socket: never leave it open for the garbage
    collector."""
    try:
        await asyncio.wait_for(connection.close(), 5.0)
    except asyncio.CancelledError:
        connection.terminate()
        raise
    except Exception:
        connection.terminate()
