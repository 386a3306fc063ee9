"""The token vault on real databases: ciphertext only, crypto-erasure, online key rotation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select, text

from mailbox_worker.db.models import MailboxKey, TokenRecord
from mailbox_worker.errors import DecryptionFailed, KeyUnavailable, TokenRecordChanged
from mailbox_worker.tokens.keys.file_source import FileKeySource
from mailbox_worker.tokens.vault import TOKENS, TokenVault

from .conftest import Stores

SECRET = b'{"refresh_token": "1.AQ-very-secret-refresh-token-value"}'


async def vault_and_mailbox(
    stores: Stores, tmp_path: Path
) -> tuple[TokenVault, FileKeySource, str]:
    keys = FileKeySource(tmp_path / "keys.json", create_if_missing=True)
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    return TokenVault(stores.sessions, keys, stores.scrubber), keys, mailbox.id


async def all_bytes(stores: Stores) -> bytes:
    """Every value of every row of every table, as bytes (what an attacker with the DB sees)."""
    dump = b""
    async with stores.engine.connect() as connection:
        for table in (
            "mailbox_keys",
            "token_records",
            "oauth_states",
            "audit_events",
            "job_events",
        ):
            for row in (await connection.execute(text(f"SELECT * FROM {table}"))).all():  # noqa: S608
                for value in row:
                    dump += value if isinstance(value, bytes | memoryview) else str(value).encode()
    return dump


async def test_tokens_are_stored_only_as_ciphertext(stores: Stores, tmp_path: Path) -> None:
    vault, keys, mailbox_id = await vault_and_mailbox(stores, tmp_path)
    version = await vault.store_tokens(mailbox_id, SECRET, expected_version=None)
    assert version == 1
    assert b"very-secret" not in await all_bytes(stores)
    async with stores.sessions() as session:
        record = await session.get(TokenRecord, mailbox_id)
        key = await session.get(MailboxKey, mailbox_id)
    assert record is not None and key is not None
    assert record.kek_id == key.kek_id == keys.active_key().key_id
    fresh = TokenVault(stores.sessions, keys, stores.scrubber)  # no cached data key
    loaded = await fresh.load_tokens(mailbox_id)
    assert loaded is not None and loaded.plaintext == SECRET
    assert "very-secret" not in repr(loaded)


async def test_concurrent_writers_cannot_lose_a_rotation(stores: Stores, tmp_path: Path) -> None:
    vault, _, mailbox_id = await vault_and_mailbox(stores, tmp_path)
    await vault.store_tokens(mailbox_id, b"v1", expected_version=None)
    assert await vault.store_tokens(mailbox_id, b"v2", expected_version=1) == 2
    with pytest.raises(TokenRecordChanged):
        await vault.store_tokens(mailbox_id, b"stale", expected_version=1)
    loaded = await vault.load_tokens(mailbox_id)
    assert loaded is not None and (loaded.plaintext, loaded.version) == (b"v2", 2)


async def test_ciphertext_does_not_open_for_another_mailbox(stores: Stores, tmp_path: Path) -> None:
    vault, _, mailbox_id = await vault_and_mailbox(stores, tmp_path)
    other = await stores.connected_mailbox((await stores.accounts.create_account("b")).id)
    sealed = await vault.seal(mailbox_id, TOKENS, SECRET)
    await vault.seal(other.id, TOKENS, b"x")
    with pytest.raises(DecryptionFailed):
        await vault.open(other.id, TOKENS, sealed)
    with pytest.raises(DecryptionFailed):
        await vault.open(mailbox_id, "authorization", sealed)


async def test_erase_is_crypto_erasure(stores: Stores, tmp_path: Path) -> None:
    vault, keys, mailbox_id = await vault_and_mailbox(stores, tmp_path)
    await vault.store_tokens(mailbox_id, SECRET, expected_version=None)
    async with stores.sessions() as session:
        sealed = (await session.get(TokenRecord, mailbox_id)).ciphertext  # type: ignore[union-attr]
    await vault.erase(mailbox_id)
    await vault.erase(mailbox_id)  # idempotent
    assert await vault.load_tokens(mailbox_id) is None
    async with stores.sessions() as session:
        assert (await session.scalars(select(MailboxKey))).all() == []
    assert sealed not in await all_bytes(stores)
    with pytest.raises(KeyUnavailable):
        await TokenVault(stores.sessions, keys, stores.scrubber).open(mailbox_id, TOKENS, sealed)


async def test_rotation_rewraps_every_data_key_online(stores: Stores, tmp_path: Path) -> None:
    vault, keys, first = await vault_and_mailbox(stores, tmp_path)
    second = (await stores.connected_mailbox((await stores.accounts.create_account("b")).id)).id
    for mailbox_id in (first, second):
        await vault.store_tokens(mailbox_id, SECRET + mailbox_id.encode(), expected_version=None)
    old = keys.active_key().key_id
    new = keys.add_key().key_id
    report = await vault.rewrap_all()
    assert (report.rewrapped, report.already_current) == (2, 0)
    assert await vault.key_usage() == {new: 2}
    keys.retire(old)
    fresh = TokenVault(stores.sessions, FileKeySource(tmp_path / "keys.json"), stores.scrubber)
    for mailbox_id in (first, second):
        loaded = await fresh.load_tokens(mailbox_id)
        assert loaded is not None and loaded.plaintext == SECRET + mailbox_id.encode()
    async with stores.sessions() as session:
        assert {r.kek_id for r in (await session.scalars(select(TokenRecord))).all()} == {new}


async def test_a_missing_key_fails_closed(stores: Stores, tmp_path: Path) -> None:
    vault, _, mailbox_id = await vault_and_mailbox(stores, tmp_path)
    await vault.store_tokens(mailbox_id, SECRET, expected_version=None)
    stranger = FileKeySource(tmp_path / "other-keys.json", create_if_missing=True)
    with pytest.raises(KeyUnavailable) as caught:
        await TokenVault(stores.sessions, stranger, stores.scrubber).load_tokens(mailbox_id)
    assert "very-secret" not in str(caught.value)


async def test_rotation_under_concurrent_token_writes_leaves_nothing_under_the_old_key(
    stores: Stores, tmp_path: Path
) -> None:
    keys = FileKeySource(tmp_path / "keys.json", create_if_missing=True)
    vault = TokenVault(stores.sessions, keys, stores.scrubber)
    account = await stores.accounts.create_account("load")
    mailboxes = [(await stores.connected_mailbox(account.id)).id for _ in range(8)]
    versions = {}
    for mailbox_id in mailboxes:
        versions[mailbox_id] = await vault.store_tokens(mailbox_id, b"v1", expected_version=None)
    old = keys.active_key().key_id

    async def writer(mailbox_id: str) -> None:
        for round_number in range(5):
            versions[mailbox_id] = await vault.store_tokens(
                mailbox_id, f"v{round_number}".encode(), expected_version=versions[mailbox_id]
            )
            await asyncio.sleep(0)

    async def rotate() -> None:
        await asyncio.sleep(0.01)
        keys.add_key()
        await vault.rewrap_all()

    await asyncio.gather(*(writer(m) for m in mailboxes), rotate())
    await vault.rewrap_all()  # catches data keys created after the first pass, if any
    new = keys.active_key().key_id
    assert await vault.key_usage() == {new: len(mailboxes)}
    async with stores.sessions() as session:
        assert {r.kek_id for r in (await session.scalars(select(TokenRecord))).all()} == {new}
    keys.retire(old)
    fresh = TokenVault(stores.sessions, FileKeySource(tmp_path / "keys.json"), stores.scrubber)
    for mailbox_id in mailboxes:
        loaded = await fresh.load_tokens(mailbox_id)
        assert loaded is not None
        assert loaded.plaintext == b"v4"
