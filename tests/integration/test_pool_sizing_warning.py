"""``serve`` checks the PostgreSQL pool against what the process can hold at once
(docs/architecture.md#pool-sizing): one warning and a gauge, never a refusal to start."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from mailbox_worker.app import App
from mailbox_worker.config import (
    DatabaseSettings,
    KeySettings,
    ServerSettings,
    Settings,
    WorkerSettings,
)
from tests.ports import free_port

from .api_harness import IdleProvider

SHORT = (4, 2)
"""6 connections, against 24 + 8 + 2 = 34 for concurrency 24 with scheduled rotation."""


def settings(url: str, tmp_path: Path, pool: tuple[int, int]) -> Settings:
    """``pool``: ``(pool_size, max_overflow)``."""
    port = free_port()
    return Settings(
        database=DatabaseSettings(url=url, pool_size=pool[0], max_overflow=pool[1]),
        worker=WorkerSettings(concurrency=24),
        server=ServerSettings(port=port, public_url=f"http://127.0.0.1:{port}"),
        keys=KeySettings(source="file", file=str(tmp_path / "keys.json"), create_if_missing=True),
    )


async def serve_briefly(app: App) -> None:
    """Start ``serve``, wait until it listens, stop it."""
    stop, started = asyncio.Event(), asyncio.Event()
    serving = asyncio.create_task(app.serve(stop, started=started))
    async with asyncio.timeout(30):
        await started.wait()
    stop.set()
    await serving


def pool_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "mailbox_worker.app" and "database.pool_size" in record.getMessage()
    ]


def gauge(app: App, bound: str) -> float | None:
    return app.registry.get_sample_value("mailbox_worker_database_connections", {"bound": bound})


async def test_serve_warns_once_when_the_pool_is_smaller_than_the_process_can_need(
    migrated_database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mailbox_worker.app")
    app = App.build(
        settings(migrated_database_url, tmp_path, SHORT),
        providers={"microsoft": IdleProvider()},
    )
    try:
        await serve_briefly(app)
    finally:
        await app.close()
    warnings = pool_warnings(caplog)
    if migrated_database_url.startswith("sqlite"):
        assert warnings == []  # one writer, no pool: no rule
        assert gauge(app, "pool") is None
        return
    assert len(warnings) == 1
    assert "4 + 2 = 6 connections" in warnings[0]
    assert "can hold 34 at once" in warnings[0]
    assert "worker.concurrency 24" in warnings[0]
    assert (gauge(app, "pool"), gauge(app, "needed")) == (6, 34)


@pytest.mark.postgres
async def test_a_pool_large_enough_starts_without_a_warning(
    postgres_template: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.conftest import create_postgres_database, drop_postgres_database

    url = await create_postgres_database(template=postgres_template)
    caplog.set_level(logging.WARNING, logger="mailbox_worker.app")
    app = App.build(
        settings(url, tmp_path, (20, 14)),
        providers={"microsoft": IdleProvider()},
    )
    try:
        await serve_briefly(app)
    finally:
        await app.close()
        await drop_postgres_database(url)
    assert pool_warnings(caplog) == []
    assert (gauge(app, "pool"), gauge(app, "needed")) == (34, 34)
