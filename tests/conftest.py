"""Shared fixtures: real databases (SQLite always, PostgreSQL when configured).

PostgreSQL tests are marked ``postgres``; they run when ``MAILBOX_WORKER_TEST_POSTGRES_URL``
is set (``.ci/run`` sets it) and each gets a database of its own, dropped afterwards. With
``MAILBOX_WORKER_TEST_REQUIRE_POSTGRES=1`` the session fails if no PostgreSQL test passed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

POSTGRES_URL = os.environ.get("MAILBOX_WORKER_TEST_POSTGRES_URL", "")
REQUIRE_POSTGRES = os.environ.get("MAILBOX_WORKER_TEST_REQUIRE_POSTGRES") == "1"

_postgres_passed = 0


def require_postgres() -> None:
    """Skip (visibly) when no PostgreSQL is configured; fail instead when it is required."""
    if POSTGRES_URL:
        return
    reason = "PostgreSQL not configured: set MAILBOX_WORKER_TEST_POSTGRES_URL (.ci/run does)"
    if REQUIRE_POSTGRES:
        pytest.fail(reason)
    pytest.skip(reason)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _postgres_passed
    if report.when == "call" and report.passed and "postgres" in report.keywords:
        _postgres_passed += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if REQUIRE_POSTGRES and exitstatus == 0 and session.config.option.markexpr != "not postgres":
        selected = [item for item in session.items if "postgres" in item.keywords]
        if selected and _postgres_passed == 0:
            print("\nERROR: PostgreSQL was required but no PostgreSQL test passed")
            session.exitstatus = 1
        elif selected:
            print(f"\nPostgreSQL tests passed: {_postgres_passed}")


def _admin_dsn() -> str:
    url = make_url(POSTGRES_URL)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def create_postgres_database() -> str:
    """A fresh, empty database; returns its SQLAlchemy URL."""
    name = f"mw_test_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(_admin_dsn())
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    connection = await asyncpg.connect(_admin_dsn())
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
    ]
)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    require_postgres()
    url = await create_postgres_database()
    try:
        yield url
    finally:
        await drop_postgres_database(url)
