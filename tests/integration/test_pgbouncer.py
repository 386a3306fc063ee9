"""PostgreSQL through PgBouncer in transaction mode (how large deployments run it).

A real PgBouncer (Debian's ``pgbouncer``; ``.ci/run`` installs it) is started on a free port
in front of the test server, with fewer server connections than the engine's pool, so that
consecutive transactions of one client connection land on different server connections.
With ``database.transaction_pooler = true`` the store's work goes through; without it,
asyncpg's prepared statements break on the first reuse, which is what the setting is for.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from mailbox_worker.db import migrate
from mailbox_worker.db.accounts import AccountStore
from mailbox_worker.db.engine import DatabaseSettings, create_engine, create_session_factory
from mailbox_worker.db.mailboxes import MailboxStore
from mailbox_worker.jobs.queue import JobQueue
from mailbox_worker.jobs.store import JobStore, NewJob
from tests.ports import free_port

from ..conftest import REQUIRE_POSTGRES, create_postgres_database, drop_postgres_database
from .conftest import NO_MAILBOX_LIMITS

pytestmark = pytest.mark.postgres

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
JOBS = 60
SERVER_CONNECTIONS = 2


@pytest.fixture
def pgbouncer() -> Iterator[int]:
    """A PgBouncer in transaction mode in front of the test server; yields its port."""
    if not os.path.exists(PGBOUNCER):
        reason = "pgbouncer is not installed (apt-get install pgbouncer; .ci/run does)"
        if REQUIRE_POSTGRES:
            pytest.fail(reason)
        pytest.skip(reason)
    port = free_port()
    # PgBouncer refuses to run as root, so it runs as postgres, which cannot enter pytest's
    # private temporary folders: its files live in a folder of its own under /tmp.
    folder = Path(tempfile.mkdtemp(prefix="mw-pgbouncer-"))
    (folder / "users.txt").write_text('"postgres" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        "* = host=127.0.0.1 port=5432\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\n"
        f"pool_mode = transaction\ndefault_pool_size = {SERVER_CONNECTIONS}\n"
        "max_client_conn = 100\nserver_reset_query =\n"
        "ignore_startup_parameters = extra_float_digits\n"
    )
    for path in (folder, *folder.iterdir()):
        shutil.chown(path, "postgres")
    log = (folder / "pgbouncer.log").open("wb")
    process = subprocess.Popen(
        [PGBOUNCER, "-u", "postgres", str(folder / "pgbouncer.ini")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"pgbouncer exited: {(folder / 'pgbouncer.log').read_text()}")
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """A migrated database on the server (made directly, not through the pooler)."""
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


def _through(url: str, port: int) -> str:
    return make_url(url).set(port=port).render_as_string(hide_password=False)


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
        url=_through(database, pgbouncer), pool_size=8, transaction_pooler=True
    )
    engine = create_engine(settings)
    try:
        assert await _enqueue_and_claim(engine) == JOBS
    finally:
        await engine.dispose()


async def test_without_the_setting_prepared_statements_break_behind_pgbouncer(
    pgbouncer: int, database: str
) -> None:
    engine = create_engine(DatabaseSettings(url=_through(database, pgbouncer), pool_size=8))
    try:
        with pytest.raises(Exception, match="prepared statement"):
            await _enqueue_and_claim(engine)
    finally:
        await engine.dispose()
