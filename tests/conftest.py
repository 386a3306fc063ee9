"""Shared fixtures: real databases (SQLite always, PostgreSQL when configured).

PostgreSQL tests are marked ``postgres``; they run when ``MAILBOX_WORKER_TEST_POSTGRES_URL``
is set (``.ci/run`` sets it) and each gets a database of its own, dropped afterwards. With
``MAILBOX_WORKER_TEST_REQUIRE_POSTGRES=1`` the session fails if no PostgreSQL test passed.

``database_url`` is an empty database; ``migrated_database_url`` one at the newest migration,
copied from a template migrated once per session (a file copy on SQLite, ``CREATE DATABASE …
TEMPLATE`` on PostgreSQL), as procrastinate does, so each test does not run Alembic again.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
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


@pytest.fixture(autouse=True)
def _collect_leaks_where_they_happen(request: pytest.FixtureRequest) -> Iterator[None]:
    """Collect garbage as a PostgreSQL test ends, so a connection it left unclosed warns (and
    fails, warnings being errors) in that test's teardown rather than in whichever test the
    garbage collector happens to run in later.

    What survives a full collection is alive, and is frozen (``gc.freeze``) so that the next
    collection looks only at what was made since: without it, each of these collections walked
    the whole heap of the session so far, which added about six minutes to the suite."""
    yield
    if "postgres" in request.keywords:
        gc.collect()
        gc.freeze()


def _admin_dsn() -> str:
    url = make_url(POSTGRES_URL)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def create_postgres_database(template: str | None = None) -> str:
    """A fresh database, empty or a copy of ``template`` (a database name); returns its URL."""
    name = f"mw_test_{uuid.uuid4().hex[:12]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    connection = await asyncpg.connect(_admin_dsn())
    try:
        await connection.execute(f'CREATE DATABASE "{name}"{clause}')
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


def _run_in_own_loop(work: object) -> None:
    """Run a coroutine to completion on a fresh event loop in a thread of its own (session
    fixtures are set up while a test's loop may already be running)."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(work)  # type: ignore[arg-type]
        except BaseException as error:  # handed to the caller below
            failure.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


async def _migrate(url: str) -> None:
    from mailbox_worker.config import DatabaseSettings
    from mailbox_worker.db import migrate
    from mailbox_worker.db.engine import create_engine

    engine = create_engine(DatabaseSettings(url=url))
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()  # SQLite: the last close checkpoints the WAL into the file


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the newest migration, made once per session."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    _run_in_own_loop(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """The name of a PostgreSQL database at the newest migration, made once per session."""
    require_postgres()
    holder: list[str] = []

    async def make() -> None:
        url = await create_postgres_database()
        holder.append(url)
        await _migrate(url)

    _run_in_own_loop(make())
    yield str(make_url(holder[0]).database)
    _run_in_own_loop(drop_postgres_database(holder[0]))


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
    ]
)
async def migrated_database_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """A database at the newest migration on each backend, copied from a session template."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "test.db"
        shutil.copyfile(template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    require_postgres()
    url = await create_postgres_database(template=request.getfixturevalue("postgres_template"))
    try:
        yield url
    finally:
        await drop_postgres_database(url)
