"""Disconnect means gone: no byte of erased token material survives in the live database.

Every byte string written to a token table is captured as it is sent to the database (each
wrapped data key, each version of the token record, each sealed authorization, each pending
revocation), with the plaintext tokens the sandbox issued. After the erasure the storage is
read raw: SQLite's main file, ``-wal``, ``-shm`` and ``-journal`` byte by byte; PostgreSQL's
pages of each token table and its TOAST table through ``pageinspect`` (shared buffers, so
no checkpoint is needed). Secrets are searched in 24-byte pieces, so that a copy split
across pages or TOAST chunks is still found. Without the scrub (docs/erasure.md) these
tests fail: SQLite keeps old page images in the WAL, PostgreSQL keeps dead tuples.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import aiohttp
from sqlalchemy import delete, event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from mailbox_worker.db.erasure import TOKEN_TABLES, StorageScrubber
from mailbox_worker.db.models import MailboxKey, TokenRecord
from mailbox_worker.tokens.keys.file_source import FileKeySource
from mailbox_worker.tokens.vault import TOKENS, TokenVault

from .conftest import Stores
from .oauth_world import World

PIECE = 24
SECRET_FIELDS = {"secret", "access_token", "refresh_token", "id_token"}
GOOGLE_USER = "invoices@fabrikam.example"

TOAST_OF = "SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = CAST(:t AS regclass)"
BLOCKS_OF = "SELECT pg_relation_size(CAST(:r AS regclass)) / current_setting('block_size')::int"
RAW_PAGE = "SELECT get_raw_page(CAST(:r AS text), CAST(:n AS int))"


class Written:
    """The byte strings written to the token tables, per table, in the order written."""

    def __init__(self) -> None:
        self.by_table: dict[str, list[bytes]] = {table: [] for table in TOKEN_TABLES}

    def record(self, statement: str, parameters: Any) -> None:
        lowered = statement.lower()
        for table in TOKEN_TABLES:
            if lowered.startswith(("insert", "update")) and f" {table}" in lowered:
                self.by_table[table].extend(_bytes_in(parameters))

    def all(self) -> list[bytes]:
        return [blob for blobs in self.by_table.values() for blob in blobs]


def _bytes_in(value: Any) -> Iterator[bytes]:
    if isinstance(value, bytes | bytearray | memoryview):
        yield bytes(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _bytes_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _bytes_in(item)


@contextmanager
def capture(engine: AsyncEngine) -> Iterator[Written]:
    written = Written()

    def listener(*args: Any) -> None:
        _connection, _cursor, statement, parameters, _context, _many = args
        written.record(statement, parameters)

    event.listen(engine.sync_engine, "before_cursor_execute", listener)
    try:
        yield written
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", listener)


def pieces(secret: bytes) -> list[bytes]:
    if len(secret) <= PIECE:
        return [secret]
    return [secret[start : start + PIECE] for start in range(0, len(secret) - PIECE + 1, PIECE)]


def token_secrets(plaintext: bytes) -> set[bytes]:
    """The token strings in an msal cache or a Google token blob."""
    found: set[bytes] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in SECRET_FIELDS and isinstance(item, str) and item:
                    found.add(item.encode())
                else:
                    walk(item)

    walk(json.loads(plaintext))
    return found


async def stored_bytes(engine: AsyncEngine) -> bytes:
    """Everything the database holds for the token tables, read below SQL."""
    if engine.dialect.name == "sqlite":
        database = Path(str(engine.url.database))
        files = [database, *(database.with_name(database.name + s) for s in ("-wal", "-shm"))]
        files.append(database.with_name(database.name + "-journal"))
        return b"".join(path.read_bytes() for path in files if path.exists())
    pages: list[bytes] = []
    async with engine.connect() as connection:
        await connection.execute(text("CREATE EXTENSION IF NOT EXISTS pageinspect"))
        for table in TOKEN_TABLES:
            toast = await connection.scalar(text(TOAST_OF), {"t": table})
            for relation in (table, toast):
                if relation is None or relation == "-":
                    continue
                blocks = int(await connection.scalar(text(BLOCKS_OF), {"r": relation}) or 0)
                for block in range(blocks):
                    page = await connection.scalar(text(RAW_PAGE), {"r": relation, "n": block})
                    pages.append(bytes(page))
        await connection.commit()
    return b"".join(pages)


async def survivors(engine: AsyncEngine, secrets: list[bytes]) -> list[int]:
    """Indexes of the secrets of which some piece is still stored."""
    storage = await stored_bytes(engine)
    return [
        index
        for index, secret in enumerate(secrets)
        if any(piece in storage for piece in pieces(secret))
    ]


async def test_disconnect_leaves_no_copy_of_any_token(world: World) -> None:
    with capture(world.app.engine) as written:
        mailbox = await world.connected()
        await world.enqueue(mailbox.id)
        await asyncio.wait_for(world.app.worker.run_until_idle(), 60)
        for _ in range(3):
            await world.app.tokens.get(mailbox, force_refresh=True)
        await world.enqueue(mailbox.id)
        await asyncio.wait_for(world.app.worker.run_until_idle(), 60)
        records = written.by_table["token_records"]
        assert len(set(records)) >= 4, "the token record was not rewritten"
        plaintexts = set()
        for sealed in records:
            plaintexts |= token_secrets(await world.app.vault.open(mailbox.id, TOKENS, sealed))
        ciphertexts = written.all()
        assert written.by_table["mailbox_keys"]
        assert written.by_table["oauth_states"]
        # The scan sees what is stored: the current record and data key are found.
        assert await survivors(world.app.engine, ciphertexts)

        await world.app.mailbox_service.disconnect(world.principal, mailbox.id)

    assert not world.app.scrubber.pending
    assert await survivors(world.app.engine, ciphertexts) == []
    assert await survivors(world.app.engine, sorted(plaintexts)) == []


async def test_a_google_token_revoked_late_leaves_no_copy(world: World) -> None:
    with capture(world.app.engine) as written:
        mailbox = await world.connected("google", login=GOOGLE_USER)
        for _ in range(2):
            await world.app.tokens.get(mailbox, force_refresh=True)
        plaintexts = set()
        for sealed in written.by_table["token_records"]:
            plaintexts |= token_secrets(await world.app.vault.open(mailbox.id, TOKENS, sealed))
        world.sandbox.state.queue_fault("google.revoke", "status", status=503)
        await world.app.mailbox_service.disconnect(world.principal, mailbox.id)
        [waiting] = await world.app.revocations.pending()
        mailbox_material = [
            blob for table in ("token_records", "mailbox_keys") for blob in written.by_table[table]
        ]
        to_revoke = written.by_table["pending_revocations"]
        assert len(to_revoke) == 2  # the standalone wrapped key and the sealed token
        assert await survivors(world.app.engine, mailbox_material) == []
        # The token still to revoke is kept, sealed under its own key, until Google answers.
        assert await survivors(world.app.engine, to_revoke) == [0, 1]

        assert await world.app.revocations.retry_due(everything=True) == 1

    assert await survivors(world.app.engine, written.all()) == []
    assert await survivors(world.app.engine, sorted(plaintexts)) == []
    assert waiting.mailbox_id == mailbox.id
    await _assert_google_revoked(world)


async def _assert_google_revoked(world: World) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{world.sandbox.base_url}/_sandbox/google/grants", ssl=world.ssl) as answer,
    ):
        grants = (await answer.json())["grants"]
    assert [grant["revoked"] for grant in grants] == [True]


async def test_a_scrub_held_back_by_a_transaction_is_finished_by_the_background_loop(
    stores: Stores, tmp_path: Path
) -> None:
    """PostgreSQL: a transaction older than the erasure would make VACUUM FULL copy the dead
    rows; SQLite: a transaction holding the write lock keeps the WAL checkpoint busy."""
    postgresql = stores.engine.dialect.name == "postgresql"
    scrubber = StorageScrubber(stores.engine, snapshot_wait=0.1, busy_timeout_ms=50)
    vault = TokenVault(
        stores.sessions, FileKeySource(tmp_path / "k.json", create_if_missing=True), scrubber
    )
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.mailboxes.create(account.id, "microsoft", ["send"], actor="t")
    with capture(stores.engine) as written:
        await vault.store_tokens(mailbox.id, b'{"secret": "x"}' * 200, expected_version=None)
    async with stores.engine.connect() as older:
        if postgresql:
            await older.execute(text("SELECT pg_current_xact_id()"))
        async with stores.engine.begin() as erasing:
            for model in (TokenRecord, MailboxKey):
                await erasing.execute(delete(model).where(model.mailbox_id == mailbox.id))
        if not postgresql:
            await older.execute(text("SELECT count(*) FROM accounts"))
        assert await scrubber.after_erasure() is False
        assert scrubber.pending
        assert await survivors(stores.engine, written.all())  # deleted, yet still readable
        await older.rollback()
    stop = asyncio.Event()
    retrying = asyncio.create_task(scrubber.run(stop, interval=0.05))  # the daemon's loop
    try:
        # mypy keeps `pending` narrowed to True by the assert above; the loop task clears it.
        while cast(bool, scrubber.pending):
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.wait_for(retrying, 30)
    assert await survivors(stores.engine, written.all()) == []
