"""Pure parts of wake-ups and of ``serve``'s roles: how long an idle worker sleeps, the
listening DSN, which role and worker counts the settings allow."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from mailbox_worker.cli.serve import add_arguments, check_arguments, worker_children
from mailbox_worker.config import load_settings
from mailbox_worker.errors import ConfigError
from mailbox_worker.jobs.wakeups import CHANNEL, DueListener, idle_seconds, listen_dsn, origin

NOW = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
POSTGRES = "postgresql+asyncpg://mw:secret@db.example:5433/mail"


def test_idle_worker_sleeps_until_the_next_due_job_at_most_the_poll() -> None:
    assert idle_seconds(None, NOW, 2.0) == 2.0
    assert idle_seconds(NOW + dt.timedelta(seconds=0.25), NOW, 2.0) == 0.25
    assert idle_seconds(NOW + dt.timedelta(hours=1), NOW, 2.0) == 2.0
    assert idle_seconds(NOW - dt.timedelta(seconds=1), NOW, 2.0) == 0.0


def test_listen_dsn_is_asyncpg_s_for_postgresql_only() -> None:
    assert listen_dsn(POSTGRES) == "postgresql://mw:secret@db.example:5433/mail"
    assert listen_dsn("sqlite+aiosqlite:///var/mw.db") is None


def arguments(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, default=None)
    add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("argv", [(), ("--role", "api"), ("--role", "worker"), ("--workers", "3")])
def test_postgresql_takes_every_role_and_worker_processes(argv: tuple[str, ...]) -> None:
    check_arguments(
        arguments(*argv), load_settings(environ={"MAILBOX_WORKER_DATABASE__URL": POSTGRES})
    )


@pytest.mark.parametrize(
    ("url", "argv", "setting"),
    [
        ("sqlite+aiosqlite:///var/mw.db", ("--workers", "2"), "database.url"),
        ("sqlite+aiosqlite:///var/mw.db", ("--role", "worker"), "database.url"),
        ("sqlite+aiosqlite:///var/mw.db", ("--role", "api"), "database.url"),
        (POSTGRES, ("--role", "api", "--workers", "2"), "--workers"),
        (POSTGRES, ("--workers", "-1"), "--workers"),
    ],
)
def test_refused_combinations_name_what_is_wrong(
    url: str, argv: tuple[str, ...], setting: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        check_arguments(
            arguments(*argv), load_settings(environ={"MAILBOX_WORKER_DATABASE__URL": url})
        )
    assert setting in str(refused.value)


def test_sqlite_runs_all_in_one_process() -> None:
    check_arguments(
        arguments(),
        load_settings(environ={"MAILBOX_WORKER_DATABASE__URL": "sqlite+aiosqlite:///x.db"}),
    )


def test_each_worker_process_serves_its_metrics_on_a_port_of_its_own() -> None:
    loaded = load_settings(
        environ={"MAILBOX_WORKER_DATABASE__URL": POSTGRES, "MAILBOX_WORKER_SERVER__PORT": "9000"}
    )
    children = worker_children(arguments("--workers", "2", "--config", "mw.toml"), loaded)
    assert [child.environment["MAILBOX_WORKER_SERVER__PORT"] for child in children] == [
        "9001",
        "9002",
    ]
    assert all(
        child.command[-7:-1]
        == ["--config", "mw.toml", "serve", "--role", "worker", "--supervised-by"]
        for child in children
    )


class FakeConnection:
    """Records the listener asyncpg would call back; closes on request."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[object, int, str, str], None]] = []
        self.closed = False
        self.terminated = False

    def add_termination_listener(self, callback: Callable[[object], None]) -> None:
        pass

    async def add_listener(
        self, channel: str, callback: Callable[[object, int, str, str], None]
    ) -> None:
        assert channel == CHANNEL
        self.callbacks.append(callback)

    async def close(self) -> None:
        self.closed = True

    def terminate(self) -> None:
        self.terminated = True


async def test_a_listener_wakes_for_other_processes_not_its_own() -> None:
    connection = FakeConnection()
    wakes: list[None] = []

    async def connect(dsn: str) -> FakeConnection:
        return connection

    listener = DueListener("postgresql://db/mail", lambda: wakes.append(None), connect=connect)
    stop = asyncio.Event()
    running = asyncio.create_task(listener.run(stop))
    async with asyncio.timeout(10):
        while not connection.callbacks:
            await asyncio.sleep(0)
    assert listener.listening
    assert len(wakes) == 1  # on connecting: whatever was announced before was missed
    notify = connection.callbacks[0]
    notify(connection, 1, CHANNEL, origin())
    assert len(wakes) == 1  # its own: this process woke its worker already
    notify(connection, 1, CHANNEL, "other-host:42")
    assert len(wakes) == 2
    stop.set()
    await running
    assert connection.closed and not listener.listening


class BrokenClose(FakeConnection):
    """A connection whose polite close fails (the server went away mid-goodbye)."""

    async def close(self) -> None:
        raise ConnectionResetError("gone")


class HangingClose(FakeConnection):
    """A connection whose polite close never gets an answer."""

    async def close(self) -> None:
        await asyncio.Event().wait()


@pytest.mark.parametrize("kind", [BrokenClose, HangingClose])
async def test_a_listening_connection_that_will_not_close_is_terminated(
    kind: type[FakeConnection],
) -> None:
    connection = kind()

    async def connect(dsn: str) -> FakeConnection:
        return connection

    listener = DueListener("postgresql://db/mail", lambda: None, connect=connect)
    stop = asyncio.Event()
    running = asyncio.create_task(listener.run(stop))
    async with asyncio.timeout(10):
        while not connection.callbacks:
            await asyncio.sleep(0)
    stop.set()
    if kind is HangingClose:
        # Cancelled while waiting for the goodbye (a shutdown that will not wait 5 s).
        await asyncio.sleep(0.05)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    else:
        await running
    assert connection.terminated and not listener.listening
