"""The migrated schema is exactly the models, on both databases, and rows survive upgrades."""

from __future__ import annotations

import base64
import datetime as dt
import os
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import JSON, Connection, Table, column, insert, inspect, select, table, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailbox_worker.clock import utcnow
from mailbox_worker.config import DatabaseSettings
from mailbox_worker.db import migrate
from mailbox_worker.db.engine import create_engine, create_session_factory
from mailbox_worker.db.mailboxes import MailboxStore
from mailbox_worker.db.models import Account, Base, Job, JobContent, Mailbox, UTCDateTime
from mailbox_worker.events.outbox import Outbox
from mailbox_worker.jobs.limits import recipient_count


@pytest.fixture
async def empty_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseSettings(url=database_url))
    yield engine
    await engine.dispose()


async def insert_account_and_mailbox(
    connection: AsyncConnection, now: dt.datetime, **mailbox: Any
) -> None:
    """Account ``acc_1`` and its connected Microsoft mailbox ``mbx_1`` (``mailbox``: more
    or other columns), inserted with only the columns every revision has."""
    await connection.execute(
        insert(cast(Table, Account.__table__)).values(id="acc_1", name="acme", created_at=now)
    )
    values = {
        "id": "mbx_1",
        "account_id": "acc_1",
        "provider": "microsoft",
        "capabilities": ["send"],
        "state": "connected",
        "state_reason": None,
        "granted_scopes": [],
        "created_at": now,
        "updated_at": now,
    }
    await connection.execute(insert(cast(Table, Mailbox.__table__)).values({**values, **mailbox}))


async def test_migrations_produce_the_models(empty_engine: AsyncEngine) -> None:
    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    assert await migrate.pending(empty_engine)
    await migrate.upgrade(empty_engine)
    async with empty_engine.connect() as connection:
        assert await connection.run_sync(differences) == []


async def test_migrations_are_current_and_idempotent(empty_engine: AsyncEngine) -> None:
    await migrate.upgrade(empty_engine)
    assert not await migrate.pending(empty_engine)
    await migrate.upgrade(empty_engine)  # a second run changes nothing and does not fail
    assert not await migrate.pending(empty_engine)


async def test_migration_0004_carries_connected_mailboxes_forward_unpinned(
    database_url: str,
) -> None:
    engine = create_engine(DatabaseSettings(url=database_url))
    try:
        await migrate.upgrade(engine, "0003")
        now = utcnow()
        async with engine.begin() as connection:
            await insert_account_and_mailbox(
                connection,
                now,
                address="billing@contoso.example",
                granted_scopes=["https://graph.microsoft.com/Mail.Send"],
            )
        await migrate.upgrade(engine)
        mailbox = await MailboxStore(create_session_factory(engine)).get("mbx_1")
    finally:
        await engine.dispose()
    assert mailbox is not None
    assert (mailbox.state, mailbox.address) == ("connected", "billing@contoso.example")
    assert (mailbox.identity_tenant, mailbox.identity_subject) == (None, None)


# As it was at 0007: the model's later columns (and their Python defaults) did not exist yet.
OUTBOX_AT_0007 = table(
    "outbox_events",
    *(column(name) for name in ("account_id", "kind", "attempts")),
    column("payload", JSON()),
    *(column(name, UTCDateTime()) for name in ("created_at", "next_attempt_at")),
)


async def test_migration_0008_orders_waiting_events_by_job_then_mailbox(
    database_url: str,
) -> None:
    engine = create_engine(DatabaseSettings(url=database_url))
    now = utcnow()
    waiting = {
        "job": {"job_id": "job_1", "mailbox_id": "mbx_1"},
        "mailbox": {"mailbox_id": "mbx_1"},
        "neither": {"n": 1},
    }
    try:
        await migrate.upgrade(engine, "0007")
        async with engine.begin() as connection:
            for name, payload in waiting.items():
                await connection.execute(
                    insert(OUTBOX_AT_0007).values(
                        account_id="acc_1",
                        kind=name,
                        payload=payload,
                        created_at=now,
                        attempts=0,
                        next_attempt_at=now,
                    )
                )
        await migrate.upgrade(engine)
        events = await Outbox(create_session_factory(engine)).all()
    finally:
        await engine.dispose()
    assert {event.kind: event.ordering_key for event in events} == {
        "job": "job_1",
        "mailbox": "mbx_1",
        "neither": None,
    }


async def test_jobs_table_is_laid_out_for_cheap_queue_writes(empty_engine: AsyncEngine) -> None:
    """Migration 0014: no index that is a prefix of another on ``jobs``, and on PostgreSQL
    room on each page for HOT updates (docs/performance.md "The queue's writes")."""
    await migrate.upgrade(empty_engine)

    def index_columns(connection: Connection) -> list[tuple[str, ...]]:
        found = inspect(connection).get_indexes("jobs")
        return [tuple(str(name) for name in index["column_names"]) for index in found]

    async with empty_engine.connect() as connection:
        columns = await connection.run_sync(index_columns)
        assert ("mailbox_id", "state", "run_after") in columns
        for index in columns:
            longer = [other for other in columns if other != index and other[: len(index)] == index]
            assert not longer, f"index {index} is a prefix of {longer}"
        if empty_engine.dialect.name == "postgresql":
            options = await connection.scalar(
                text("SELECT reloptions FROM pg_class WHERE relname = 'jobs'")
            )
            assert "fillfactor=80" in options


async def test_job_payloads_are_compressed_with_lz4_or_not_at_all(
    empty_engine: AsyncEngine,
) -> None:
    """Migration 0016: on PostgreSQL ``job_contents.payload`` is compressed with lz4 where the
    server has it (CI's does; a server without it checks the other branch), which shrinks
    what compresses (HTML) and gives up at once on what does not (an attachment's base64);
    else ``STORAGE EXTERNAL``, which tries nothing. Either way the payload reads back whole
    (docs/performance.md "Fourth pass")."""
    if empty_engine.dialect.name != "postgresql":
        pytest.skip("TOAST compression is PostgreSQL's; SQLite stores a value as it is")
    await migrate.upgrade(empty_engine)
    column_settings = text(
        "SELECT attcompression, attstorage FROM pg_attribute "
        "WHERE attrelid = CAST('job_contents' AS regclass) AND attname = 'payload'"
    )
    has_lz4 = text(
        "SELECT 'lz4' = ANY (enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    )
    attachment = base64.b64encode(os.urandom(30_000)).decode("ascii")
    html = "<tr><td>Consulting</td><td>1</td><td>100.00</td></tr>" * 2000  # compressible
    payload = {"to": [{"address": "ap@fabrikam.example"}], "html": html, "pdf": attachment}
    now = utcnow()
    async with empty_engine.begin() as connection:
        lz4 = await connection.scalar(has_lz4)
        # "char" columns: asyncpg reads them as bytes ("l": lz4; "x": extended, "e": external)
        settings = (b"l", b"x") if lz4 else (b"", b"e")
        assert tuple((await connection.execute(column_settings)).one()) == settings
        await insert_account_and_mailbox(connection, now)
        await connection.execute(
            insert(cast(Table, Job.__table__)).values(
                id="job_1",
                account_id="acc_1",
                mailbox_id="mbx_1",
                mode="send",
                state="queued",
                request_sha256="0" * 64,
                message_id="<m@x>",
                attempts=0,
                transient_failures=0,
                run_after=now,
                created_at=now,
                updated_at=now,
            )
        )
        await connection.execute(
            insert(cast(Table, JobContent.__table__)).values(job_id="job_1", payload=payload)
        )
        stored = text(
            "SELECT pg_column_compression(payload), pg_column_size(payload), "
            "octet_length(CAST(payload AS text)) FROM job_contents"
        )
        method, size, length = (await connection.execute(stored)).one()
        if lz4:
            assert method == "lz4"
            assert size < length - len(html) // 2  # the HTML shrank
        else:
            assert (method, size) == (None, length)  # stored as it is
        read = select(JobContent.payload).where(JobContent.job_id == "job_1")
        assert await connection.scalar(read) == payload


async def test_migration_0015_counts_the_recipients_of_jobs_not_yet_claimed(
    database_url: str,
) -> None:
    """Enqueued before 0015, a job's ``recipient_count`` was the default 1 until its claim
    counted it; the claim no longer does, so the migration counts it for queued and held jobs
    (To, Cc and Bcc; at least 1) and leaves claimed ones as their claim stored them."""
    engine = create_engine(DatabaseSettings(url=database_url))
    now = utcnow()
    payloads: dict[str, dict[str, Any]] = {
        "job_queued": {
            "to": [{"address": "a@x.example"}, {"address": "b@x.example"}],
            "cc": [{"address": "c@x.example"}],
            "bcc": [{"address": "d@x.example"}],
        },
        "job_held": {"to": [{"address": "a@x.example"}], "cc": None},
        "job_no_one": {"to": []},
        "job_running": {"to": [{"address": "a@x.example"}, {"address": "b@x.example"}]},
    }
    states = {
        "job_queued": "queued",
        "job_held": "held",
        "job_no_one": "queued",
        "job_running": "running",
    }
    try:
        await migrate.upgrade(engine, "0014")
        async with engine.begin() as connection:
            await insert_account_and_mailbox(connection, now)
            for job_id, payload in payloads.items():
                await connection.execute(
                    insert(cast(Table, Job.__table__)).values(
                        id=job_id,
                        account_id="acc_1",
                        mailbox_id="mbx_1",
                        mode="send",
                        state=states[job_id],
                        request_sha256="0" * 64,
                        message_id=f"<{job_id}@contoso.example>",
                        attempts=0,
                        transient_failures=0,
                        run_after=now,
                        created_at=now,
                        updated_at=now,
                        priority=0,
                        recipient_count=7 if job_id == "job_running" else 1,
                    )
                )
                await connection.execute(
                    insert(cast(Table, JobContent.__table__)).values(job_id=job_id, payload=payload)
                )
        await migrate.upgrade(engine)
        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT id, recipient_count FROM jobs"))).all()
        counts: dict[str, int] = {str(row[0]): int(row[1]) for row in rows}
    finally:
        await engine.dispose()
    assert counts == {"job_queued": 4, "job_held": 1, "job_no_one": 1, "job_running": 7}
    assert counts["job_queued"] == recipient_count(payloads["job_queued"])


async def test_migration_0017_keeps_each_payload_as_written_in_a_text_column(
    database_url: str,
) -> None:
    """Migration 0017: on PostgreSQL ``job_contents.payload`` becomes ``text`` (the server no
    longer parses what this package serialised), each stored payload keeps its exact text and
    its lz4 compression setting, and the models read it back as the document it was."""
    engine = create_engine(DatabaseSettings(url=database_url))
    if engine.dialect.name != "postgresql":
        await engine.dispose()
        pytest.skip("SQLite's payload column is text already; 0017 changes nothing there")
    now = utcnow()
    # Spacing and key order as a client might have sent them: a json column keeps its input
    # verbatim, and so must the conversion.
    written = '{"to": [{"address": "ap@fabrikam.example"}],  "subject":"Rechnung \\u00e4"}'
    column_type = text(
        "SELECT data_type FROM information_schema.columns "
        "WHERE table_name = 'job_contents' AND column_name = 'payload'"
    )
    compression = text(
        "SELECT attcompression FROM pg_attribute "
        "WHERE attrelid = CAST('job_contents' AS regclass) AND attname = 'payload'"
    )
    try:
        await migrate.upgrade(engine, "0016")
        async with engine.begin() as connection:
            assert await connection.scalar(column_type) == "json"
            compression_before = await connection.scalar(compression)
            await insert_account_and_mailbox(connection, now)
            await connection.execute(
                text(
                    "INSERT INTO jobs (id, account_id, mailbox_id, mode, state, request_sha256, "
                    "message_id, attempts, transient_failures, run_after, created_at, "
                    "updated_at) VALUES ('job_1', 'acc_1', 'mbx_1', 'send', 'queued', "
                    "repeat('0', 64), '<m@x>', 0, 0, now(), now(), now())"
                )
            )
            await connection.execute(
                text("INSERT INTO job_contents (job_id, payload) VALUES ('job_1', :payload)"),
                {"payload": written},
            )
        await migrate.upgrade(engine)
        async with engine.connect() as connection:
            assert await connection.scalar(column_type) == "text"
            assert await connection.scalar(compression) == compression_before
            stored = await connection.scalar(text("SELECT payload FROM job_contents"))
            read = await connection.scalar(select(JobContent.payload))
    finally:
        await engine.dispose()
    assert stored == written
    assert read == {"to": [{"address": "ap@fabrikam.example"}], "subject": "Rechnung ä"}
