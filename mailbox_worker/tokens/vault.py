"""The token vault: OAuth tokens at rest, only ever as AES-256-GCM ciphertext.

Each mailbox has its own random data key, stored wrapped by a key-encryption key (KEK) from
the key source, with the KEK's id beside it (``mailbox_keys``). Token records and pending
authorizations are sealed with that data key, the mailbox id and the record's purpose bound
in as associated data, so ciphertext copied to another mailbox or purpose does not open.
Erasing a mailbox deletes its data key with its ciphertext (crypto-erasure), then has the
storage scrubber remove the freed copies from the database files (docs/erasure.md). Unwrapped
data keys are cached in memory only; ``forget`` drops them.

The token and sealing methods take an optional ``connection``: a caller inside a transaction of
its own (the token refresh, under its lock) passes it so the vault's reads and writes run on it
instead of on further pooled connections; their writes then commit with that transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from mailbox_worker.clock import Clock, utcnow
from mailbox_worker.db.erasure import StorageScrubber
from mailbox_worker.db.models import MailboxKey, OAuthState, PendingRevocation, TokenRecord
from mailbox_worker.errors import KeyUnavailable, TokenRecordChanged
from mailbox_worker.tokens.envelope import (
    encode_fields,
    new_data_key,
    open_sealed,
    seal,
    unwrap_data_key,
    wrap_data_key,
)
from mailbox_worker.tokens.keys.port import KeyEncryptionKey, KeySource

_WrappedKey = TypeVar("_WrappedKey", MailboxKey, PendingRevocation)
"""A row holding a data key wrapped under a KEK."""

TOKENS = "tokens"
AUTHORIZATION = "authorization"
STANDALONE = "standalone"


@dataclass(frozen=True)
class StoredTokens:
    plaintext: bytes
    version: int

    def __repr__(self) -> str:
        return f"StoredTokens(version={self.version}, plaintext=<{len(self.plaintext)} bytes>)"


@dataclass(frozen=True)
class RewrapReport:
    rewrapped: int
    already_current: int


class TokenVault:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        keys: KeySource,
        scrubber: StorageScrubber,
        clock: Clock = utcnow,
    ) -> None:
        self._sessions = sessions
        self._keys = keys
        self._scrubber = scrubber
        self._clock = clock
        self._data_keys: dict[str, bytes] = {}
        self._lock = asyncio.Lock()

    # -- sealing -------------------------------------------------------------------------

    async def seal(
        self,
        mailbox_id: str,
        purpose: str,
        plaintext: bytes,
        connection: AsyncConnection | None = None,
    ) -> bytes:
        """Ciphertext of ``plaintext`` for ``mailbox_id``/``purpose``; creates the data key."""
        data_key = await self._data_key(mailbox_id, create=True, connection=connection)
        return seal(data_key, plaintext, associated_data=encode_fields(purpose, mailbox_id))

    async def open(
        self,
        mailbox_id: str,
        purpose: str,
        sealed: bytes,
        connection: AsyncConnection | None = None,
    ) -> bytes:
        """Plaintext of ``sealed``; raises ``DecryptionFailed`` or ``KeyUnavailable``."""
        data_key = await self._data_key(mailbox_id, create=False, connection=connection)
        return open_sealed(data_key, sealed, associated_data=encode_fields(purpose, mailbox_id))

    @contextlib.asynccontextmanager
    async def _session(self, connection: AsyncConnection | None) -> AsyncIterator[AsyncSession]:
        """A session on a pooled connection, or on the caller's ``connection``; there its
        transaction is a savepoint, so its writes commit with the caller's transaction."""
        if connection is None:
            async with self._sessions() as session:
                yield session
            return
        async with self._sessions(
            bind=connection, join_transaction_mode="create_savepoint"
        ) as session:
            yield session

    async def _data_key(
        self, mailbox_id: str, *, create: bool, connection: AsyncConnection | None = None
    ) -> bytes:
        cached = self._data_keys.get(mailbox_id)
        if cached is not None:
            return cached
        async with self._lock:
            async with self._session(connection) as session:
                row = await session.get(MailboxKey, mailbox_id)
            if row is not None:
                kek = await asyncio.to_thread(self._keys.get, row.kek_id)
                data_key = unwrap_data_key(kek, row.wrapped_key, mailbox_id=mailbox_id)
            elif create:
                data_key = new_data_key()
                kek = await asyncio.to_thread(self._keys.active_key)
                # A new key commits on its own, never with a caller's transaction (which
                # may roll back), so the cache only ever holds keys the database keeps.
                async with self._sessions.begin() as session:
                    session.add(
                        MailboxKey(
                            mailbox_id=mailbox_id,
                            kek_id=kek.key_id,
                            wrapped_key=wrap_data_key(kek, data_key, mailbox_id=mailbox_id),
                            created_at=self._clock(),
                        )
                    )
            else:
                raise KeyUnavailable(
                    f"mailbox {mailbox_id} has no data key (its tokens were erased)",
                    code="data_key_missing",
                )
            self._data_keys[mailbox_id] = data_key
            return data_key

    # -- token records ---------------------------------------------------------------------

    async def load_tokens(
        self, mailbox_id: str, connection: AsyncConnection | None = None
    ) -> StoredTokens | None:
        """The mailbox's token record, decrypted, or None when it holds none."""
        async with self._session(connection) as session:
            record = await session.get(TokenRecord, mailbox_id)
        if record is None:
            return None
        plaintext = await self.open(mailbox_id, TOKENS, record.ciphertext, connection)
        return StoredTokens(plaintext, record.version)

    async def store_tokens(
        self,
        mailbox_id: str,
        plaintext: bytes,
        *,
        expected_version: int | None,
        connection: AsyncConnection | None = None,
    ) -> int:
        """Replace the token record atomically; returns its new version.

        ``expected_version`` is the version the caller read (None: there was none); if
        another writer stored a newer record meanwhile, raises ``TokenRecordChanged`` and
        stores nothing. With ``connection``, the record commits when its transaction does.
        """
        sealed = await self.seal(mailbox_id, TOKENS, plaintext, connection)
        now = self._clock()
        async with self._session(connection) as session, session.begin():
            # Lock the data key row as key rotation does, so the record's key id is current.
            kek_id = await session.scalar(
                select(MailboxKey.kek_id)
                .where(MailboxKey.mailbox_id == mailbox_id)
                .with_for_update()
            )
            if kek_id is None:
                raise KeyUnavailable(
                    f"mailbox {mailbox_id} has no data key", code="data_key_missing"
                )
            if expected_version is None:
                if await session.get(TokenRecord, mailbox_id) is not None:
                    raise TokenRecordChanged("token record changed concurrently")
                session.add(
                    TokenRecord(
                        mailbox_id=mailbox_id,
                        kek_id=kek_id,
                        ciphertext=sealed,
                        version=1,
                        updated_at=now,
                    )
                )
                return 1
            result = await session.execute(
                update(TokenRecord)
                .where(
                    TokenRecord.mailbox_id == mailbox_id,
                    TokenRecord.version == expected_version,
                )
                .values(
                    ciphertext=sealed, kek_id=kek_id, version=expected_version + 1, updated_at=now
                )
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                raise TokenRecordChanged("token record changed concurrently")
        return expected_version + 1

    async def replace_tokens(self, mailbox_id: str, plaintext: bytes) -> int:
        """Store a fresh grant (after consent), whatever was there before."""
        async with self._sessions.begin() as session:
            await session.execute(delete(TokenRecord).where(TokenRecord.mailbox_id == mailbox_id))
        return await self.store_tokens(mailbox_id, plaintext, expected_version=None)

    async def erase(self, mailbox_id: str) -> None:
        """Delete the mailbox's tokens, pending authorizations and data key. Idempotent.

        When something was deleted, the freed storage is scrubbed before this returns, or,
        if the database does not allow it now, left pending for the scrubber's background
        retry; the erasure itself has committed either way.
        """
        deleted = 0
        async with self._sessions.begin() as session:
            for model in (TokenRecord, OAuthState, MailboxKey):
                result = await session.execute(delete(model).where(model.mailbox_id == mailbox_id))
                deleted += result.rowcount  # type: ignore[attr-defined]
        self._data_keys.pop(mailbox_id, None)
        if deleted:
            await self._scrubber.after_erasure()

    def forget(self, mailbox_id: str) -> None:
        """Drop the cached data key of a mailbox."""
        self._data_keys.pop(mailbox_id, None)

    # -- records with a key of their own (pending revocations) -------------------------------

    async def seal_standalone(self, record_id: str, plaintext: bytes) -> tuple[str, bytes, bytes]:
        """Seal under a fresh data key bound to ``record_id``: ``(kek_id, wrapped_key, sealed)``.

        For secrets that must outlive their mailbox's data key (a token still to revoke).
        """
        kek = await asyncio.to_thread(self._keys.active_key)
        data_key = new_data_key()
        wrapped = wrap_data_key(kek, data_key, mailbox_id=record_id)
        sealed = seal(data_key, plaintext, associated_data=encode_fields(STANDALONE, record_id))
        return kek.key_id, wrapped, sealed

    async def open_standalone(
        self, record_id: str, kek_id: str, wrapped: bytes, sealed: bytes
    ) -> bytes:
        kek = await asyncio.to_thread(self._keys.get, kek_id)
        data_key = unwrap_data_key(kek, wrapped, mailbox_id=record_id)
        return open_sealed(data_key, sealed, associated_data=encode_fields(STANDALONE, record_id))

    # -- key rotation ----------------------------------------------------------------------

    async def rewrap_all(self) -> RewrapReport:
        """Re-wrap every data key under the key source's active KEK, online.

        Each data key is re-wrapped in its own short transaction guarded by its old key id,
        so a concurrent erase or rewrap is never overwritten. Token ciphertext is untouched
        (it is sealed with the data key, which does not change).
        """
        active = await asyncio.to_thread(self._keys.active_key)
        async with self._sessions() as session:
            rows = (await session.execute(select(MailboxKey.mailbox_id, MailboxKey.kek_id))).all()
        stale = [(mailbox_id, kek_id) for mailbox_id, kek_id in rows if kek_id != active.key_id]
        rewrapped = await self._rewrap_each(MailboxKey, stale, active)
        rewrapped += await self._rewrap_standalone(active)
        return RewrapReport(rewrapped=rewrapped, already_current=len(rows) - len(stale))

    async def _rewrap_standalone(self, active: KeyEncryptionKey) -> int:
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(PendingRevocation.id, PendingRevocation.kek_id).where(
                        PendingRevocation.kek_id != active.key_id
                    )
                )
            ).all()
        await self._rewrap_each(PendingRevocation, [(row[0], row[1]) for row in rows], active)
        return len(rows)

    async def _rewrap_each(
        self,
        model: type[_WrappedKey],
        stale: list[tuple[str, str]],
        active: KeyEncryptionKey,
    ) -> int:
        """Re-wrap each ``(id, kek_id)`` data key under ``active``, each in its own short
        transaction guarded by its old key id; returns how many were still as listed."""
        rewrapped = 0
        for record_id, kek_id in stale:
            async with self._sessions.begin() as session:
                row = await session.get(model, record_id, with_for_update=True)
                if row is None or row.kek_id != kek_id:
                    continue  # erased or re-wrapped meanwhile
                old = await asyncio.to_thread(self._keys.get, kek_id)
                data_key = unwrap_data_key(old, row.wrapped_key, mailbox_id=record_id)
                row.wrapped_key = wrap_data_key(active, data_key, mailbox_id=record_id)
                row.kek_id = active.key_id
                if isinstance(row, MailboxKey):  # the mailbox's token record names its KEK too
                    row.rewrapped_at = self._clock()
                    await session.execute(
                        update(TokenRecord)
                        .where(TokenRecord.mailbox_id == record_id)
                        .values(kek_id=active.key_id)
                    )
            rewrapped += 1
        return rewrapped

    async def key_usage(self) -> dict[str, int]:
        """How many data keys each KEK wraps (to know when an old KEK can be retired)."""
        async with self._sessions() as session:
            rows = [
                *(await session.execute(select(MailboxKey.kek_id))).scalars().all(),
                *(await session.execute(select(PendingRevocation.kek_id))).scalars().all(),
            ]
        usage: dict[str, int] = {}
        for kek_id in rows:
            usage[kek_id] = usage.get(kek_id, 0) + 1
        return usage
