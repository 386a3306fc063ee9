"""Migration 0012 gives the events written before it their public ids, unique, on both
databases; events written after it get theirs from the code."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from mailbox_worker.clock import utcnow
from mailbox_worker.config import DatabaseSettings
from mailbox_worker.db import migrate
from mailbox_worker.db.engine import create_engine

# Tables as they were at 0011, spelled here so later changes to the models do not alter them.
ACCOUNTS = sa.table("accounts", *(sa.column(name) for name in ("id", "name", "created_at")))
MAILBOX_COLUMNS = ("id", "account_id", "provider", "capabilities", "state", "granted_scopes")
MAILBOXES = sa.table(
    "mailboxes",
    *(sa.column(name) for name in MAILBOX_COLUMNS),
    sa.column("created_at"),
    sa.column("updated_at"),
)
JOB_COLUMNS = ("id", "account_id", "mailbox_id", "mode", "state", "request_sha256", "message_id")
JOBS = sa.table(
    "jobs",
    *(sa.column(name) for name in JOB_COLUMNS),
    *(sa.column(name) for name in ("attempts", "transient_failures", "priority")),
    *(sa.column(name) for name in ("recipient_count", "run_after", "created_at", "updated_at")),
)
JOB_EVENTS = sa.table("job_events", *(sa.column(name) for name in ("job_id", "at", "kind")))
OUTBOX = sa.table(
    "outbox_events",
    *(sa.column(name) for name in ("account_id", "kind", "payload", "created_at")),
    sa.column("attempts"),
    sa.column("next_attempt_at"),
)


async def rows_at_0011(connection: AsyncConnection, count: int) -> None:
    now = utcnow()
    await connection.execute(sa.insert(ACCOUNTS).values(id="acc_1", name="acme", created_at=now))
    mailbox: dict[str, Any] = {
        "id": "mbx_1",
        "account_id": "acc_1",
        "provider": "google",
        "capabilities": sa.cast(sa.literal('["send"]'), sa.JSON()),
        "state": "connected",
        "granted_scopes": sa.cast(sa.literal("[]"), sa.JSON()),
        "created_at": now,
        "updated_at": now,
    }
    await connection.execute(sa.insert(MAILBOXES).values(**mailbox))
    values = ("job_1", "acc_1", "mbx_1", "send", "sent", "0" * 64, "<m>")
    job = dict(zip(JOB_COLUMNS, values, strict=True))
    counters = {"attempts": 1, "transient_failures": 0, "priority": 0, "recipient_count": 1}
    await connection.execute(
        sa.insert(JOBS).values(**job, **counters, run_after=now, created_at=now, updated_at=now)
    )
    for _ in range(count):
        await connection.execute(sa.insert(JOB_EVENTS).values(job_id="job_1", at=now, kind="x"))
        await connection.execute(
            sa.insert(OUTBOX).values(
                account_id="acc_1",
                kind="job.sent",
                payload=sa.cast(sa.literal('{"job_id": "job_1"}'), sa.JSON()),
                created_at=now,
                attempts=0,
                next_attempt_at=now,
            )
        )


async def test_migration_0012_gives_existing_events_unique_prefixed_ids(database_url: str) -> None:
    engine = create_engine(DatabaseSettings(url=database_url))
    try:
        await migrate.upgrade(engine, "0011")
        async with engine.begin() as connection:
            await rows_at_0011(connection, 3)
        await migrate.upgrade(engine)
        async with engine.connect() as connection:
            outbox_ids = list(
                (await connection.execute(sa.text("SELECT public_id FROM outbox_events"))).scalars()
            )
            history_ids = list(
                (await connection.execute(sa.text("SELECT public_id FROM job_events"))).scalars()
            )
    finally:
        await engine.dispose()
    assert len(outbox_ids) == len(history_ids) == 3
    assert all(re.fullmatch(r"evt_[0-9a-f]{32}", public_id) for public_id in outbox_ids)
    assert all(re.fullmatch(r"jev_[0-9a-f]{32}", public_id) for public_id in history_ids)
    assert len(set(outbox_ids)) == len(set(history_ids)) == 3
