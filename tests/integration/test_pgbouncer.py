"""PostgreSQL through PgBouncer in transaction mode (how large deployments run it).

A real PgBouncer (``tests/pgbouncer.py``) is started on a free port in front of the test
server, with fewer server connections than the engine's pool, so that consecutive transactions
of one client connection land on different server connections. With
``database.transaction_pooler = true`` the store's work goes through; without it, asyncpg's
prepared statements break on the first reuse, which is what the setting is for.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from mailbox_worker.db import migrate
from mailbox_worker.db.accounts import AccountStore
from mailbox_worker.db.engine import DatabaseSettings, create_engine, create_session_factory
from mailbox_worker.db.erasure import StorageScrubber
from mailbox_worker.db.mailboxes import MailboxStore
from mailbox_worker.jobs.queue import JobQueue
from mailbox_worker.jobs.store import JobStore, NewJob
from tests.pgbouncer import running_pgbouncer, through

from ..conftest import create_postgres_database, drop_postgres_database, require_postgres
from .conftest import NO_MAILBOX_LIMITS

pytestmark = pytest.mark.postgres

JOBS = 60
SERVER_CONNECTIONS = 2


@pytest.fixture
def pgbouncer() -> Iterator[int]:
    """A PgBouncer in transaction mode in front of the test server; yields its port."""
    with running_pgbouncer(SERVER_CONNECTIONS) as port:
        yield port


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """A migrated database on the server (made directly, not through the pooler)."""
    require_postgres()
    url = await create_postgres_database()
    engine = create_engine(DatabaseSettings(url=url))
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()
    try:
        yield url
    finally:
        await drop_postgres_database(url)


async def _enqueue_and_claim(engine: AsyncEngine) -> int:
    """Concurrent enqueues and claims, as API requests and a worker make them."""
    sessions = create_session_factory(engine)
    accounts, mailboxes, jobs = AccountStore(sessions), MailboxStore(sessions), JobStore(sessions)
    account = await accounts.create_account("acme")
    mailbox = await mailboxes.create(account.id, "microsoft", ["send"], actor="test")
    await mailboxes.mark_connected(mailbox.id, "billing@contoso.example", ["Mail.Send"])

    async def enqueue(number: int) -> None:
        await jobs.enqueue(
            NewJob(
                account_id=account.id,
                mailbox_id=mailbox.id,
                mode="send",
                payload={"to": [{"address": "ap@fabrikam.example"}], "subject": f"{number}"},
                request_sha256=str(number),
                message_id_domain="contoso.example",
                idempotency_key=f"key-{number}",
            )
        )

    await asyncio.gather(*(enqueue(number) for number in range(JOBS)))
    claimed = 0
    for _ in range(JOBS):
        # One mailbox, 60 jobs: lift its limits, this is about the claim through the pooler.
        queue = JobQueue(sessions, limits=NO_MAILBOX_LIMITS)
        batch = await queue.claim("worker-1", 8, dt.timedelta(seconds=60))
        if not batch:
            break
        claimed += len(batch)
    return claimed


async def test_the_store_works_through_pgbouncer_with_the_pooler_setting(
    pgbouncer: int, database: str
) -> None:
    settings = DatabaseSettings(
        url=through(database, pgbouncer), pool_size=8, transaction_pooler=True
    )
    engine = create_engine(settings)
    try:
        assert await _enqueue_and_claim(engine) == JOBS
    finally:
        await engine.dispose()


async def test_without_the_setting_prepared_statements_break_behind_pgbouncer(
    pgbouncer: int, database: str
) -> None:
    engine = create_engine(DatabaseSettings(url=through(database, pgbouncer), pool_size=8))
    try:
        with pytest.raises(Exception, match="prepared statement"):
            await _enqueue_and_claim(engine)
    finally:
        await engine.dispose()


async def test_the_storage_scrub_works_through_pgbouncer_and_leaves_no_setting_behind(
    pgbouncer: int, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Three processes scrub at once (each daemon scrubs at start). Before, statements prepared
    # outside a transaction were run on another server connection ("prepared statement …
    # does not exist"), and a ``SET lock_timeout`` stayed on whichever server connection it
    # reached, for other clients to inherit.
    settings = DatabaseSettings(
        url=through(database, pgbouncer), pool_size=2, transaction_pooler=True
    )
    engines = [create_engine(settings) for _ in range(3)]
    try:
        scrubbers = [StorageScrubber(engine, transaction_pooler=True) for engine in engines]
        await asyncio.gather(*(scrubber.after_erasure() for scrubber in scrubbers))
        for scrubber in scrubbers:
            assert await scrubber.scrub_pending()  # a table one skipped is free now
        # One may have skipped a table the other was rewriting; none failed on a statement.
        assert [r.getMessage() for r in caplog.records if "scrub failed" in r.getMessage()] == []
        # Every server connection PgBouncer holds answers the server's default.
        async with engines[0].connect() as connection:
            for _ in range(SERVER_CONNECTIONS * 4):
                async with connection.begin():
                    timeout = await connection.scalar(text("SHOW lock_timeout"))
                    assert timeout == "0"
    finally:
        for engine in engines:
            await engine.dispose()
