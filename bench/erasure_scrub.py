"""What the storage scrub after an erasure costs, by number of connected mailboxes.

Fills the token tables with N mailboxes (a 60-byte wrapped data key and a 4 KiB token record
each, about what an msal cache seals to), then erases one mailbox at a time and times the
scrub that follows (SQLite: WAL checkpoint; PostgreSQL: VACUUM FULL of the token tables).
Prints figures; never passes or fails on time. PostgreSQL runs when
MAILBOX_WORKER_TEST_POSTGRES_URL is set (a scratch database is created and dropped).

    .venv/bin/python bench/erasure_scrub.py [--mailboxes 1000 10000] [--erasures 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid

from sqlalchemy import delete, insert, text

from mailbox_worker.clock import utcnow
from mailbox_worker.config import DatabaseSettings
from mailbox_worker.db import migrate
from mailbox_worker.db.engine import create_engine
from mailbox_worker.db.erasure import TOKEN_TABLES, StorageScrubber
from mailbox_worker.db.models import Account, Mailbox, MailboxKey, TokenRecord

RECORD_BYTES = 4096
BATCH = 1000


async def fill(url: str, mailboxes: int) -> list[str]:
    engine = create_engine(DatabaseSettings(url=url))
    await migrate.upgrade(engine)
    now = utcnow()
    ids = [f"mbx_{index:08d}" for index in range(mailboxes)]
    async with engine.begin() as connection:
        await connection.execute(insert(Account), [{"id": "acc", "name": "a", "created_at": now}])
        for start in range(0, mailboxes, BATCH):
            chunk = ids[start : start + BATCH]
            await connection.execute(
                insert(Mailbox),
                [
                    {
                        "id": mailbox_id,
                        "account_id": "acc",
                        "provider": "microsoft",
                        "capabilities": ["send"],
                        "state": "connected",
                        "granted_scopes": [],
                        "created_at": now,
                        "updated_at": now,
                    }
                    for mailbox_id in chunk
                ],
            )
            await connection.execute(
                insert(MailboxKey),
                [
                    {
                        "mailbox_id": m,
                        "kek_id": "k",
                        "wrapped_key": os.urandom(60),
                        "created_at": now,
                    }
                    for m in chunk
                ],
            )
            await connection.execute(
                insert(TokenRecord),
                [
                    {
                        "mailbox_id": m,
                        "kek_id": "k",
                        "ciphertext": os.urandom(RECORD_BYTES),
                        "version": 1,
                        "updated_at": now,
                    }
                    for m in chunk
                ],
            )
    await engine.dispose()
    return ids


async def measure(url: str, mailboxes: int, erasures: int) -> dict[str, float]:
    ids = await fill(url, mailboxes)
    engine = create_engine(DatabaseSettings(url=url))
    scrubber = StorageScrubber(engine)
    await scrubber.after_erasure()  # as the daemon does at start
    timings = []
    for mailbox_id in ids[:erasures]:
        async with engine.begin() as connection:
            for model in (TokenRecord, MailboxKey):
                await connection.execute(delete(model).where(model.mailbox_id == mailbox_id))
        started = time.perf_counter()
        assert await scrubber.after_erasure()
        timings.append(time.perf_counter() - started)
    size = 0.0
    if engine.dialect.name == "postgresql":
        async with engine.connect() as connection:
            size = float(
                await connection.scalar(
                    text(
                        "SELECT sum(pg_total_relation_size(to_regclass(name)))"
                        " FROM unnest(CAST(:names AS text[])) AS name"
                    ),
                    {"names": list(TOKEN_TABLES)},
                )
                or 0
            )
    await engine.dispose()
    return {
        "median_ms": statistics.median(timings) * 1000,
        "max_ms": max(timings) * 1000,
        "token_tables_mib": size / 2**20,
    }


async def with_postgres(base_url: str, mailboxes: int, erasures: int) -> dict[str, float]:
    import asyncpg
    from sqlalchemy.engine import make_url

    name = f"mw_bench_{uuid.uuid4().hex[:8]}"
    admin = make_url(base_url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(admin)
    await connection.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(base_url).set(database=name).render_as_string(hide_password=False)
        return await measure(url, mailboxes, erasures)
    finally:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.close()


async def main(sizes: list[int], erasures: int) -> None:
    postgres = os.environ.get("MAILBOX_WORKER_TEST_POSTGRES_URL", "")
    for mailboxes in sizes:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite+aiosqlite:///{folder}/bench.db"
            figures = await measure(url, mailboxes, erasures)
            print(f"sqlite      {mailboxes:>6} mailboxes: checkpoint {_show(figures)}")
        if postgres:
            figures = await with_postgres(postgres, mailboxes, erasures)
            print(
                f"postgresql  {mailboxes:>6} mailboxes: VACUUM FULL {_show(figures)}"
                f"  (token tables {figures['token_tables_mib']:.1f} MiB)"
            )


def _show(figures: dict[str, float]) -> str:
    return f"median {figures['median_ms']:.1f} ms, max {figures['max_ms']:.1f} ms"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--erasures", type=int, default=5)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.mailboxes, arguments.erasures))
