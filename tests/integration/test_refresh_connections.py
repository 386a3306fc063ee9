"""Token refreshes through a small pool: each refresh works on the one connection it locks.

Many cold mailboxes refreshing at once must not need more connections than the pool has: the
vault reads and writes on the connection that holds the refresh's lock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import make_url, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from mailbox_worker.config import DatabaseSettings
from mailbox_worker.db.engine import create_engine, create_session_factory
from mailbox_worker.db.locks import DatabaseLocks
from mailbox_worker.db.models import Mailbox, TokenRecord
from mailbox_worker.policy.scopes import CAPABILITIES
from mailbox_worker.prometheus import PrometheusTelemetry
from mailbox_worker.tokens.access_tokens import AccessTokens
from mailbox_worker.tokens.identity_client import AccessToken, Grant, IdentityClient, Refreshed
from mailbox_worker.tokens.keys.file_source import FileKeySource
from mailbox_worker.tokens.vault import TokenVault

from .conftest import Stores

MAILBOXES = 8


class RefreshingIdentity:
    """An identity client whose every refresh succeeds with a new token blob; records calls."""

    provider = "microsoft"
    capabilities = CAPABILITIES

    def __init__(self) -> None:
        self.refreshed: list[str] = []
        self._guard = threading.Lock()

    def refresh(self, cache_blob: str, scopes: list[str], *, force: bool) -> Refreshed:
        with self._guard:
            self.refreshed.append(cache_blob)
        time.sleep(0.01)  # a token endpoint round trip, while the lock is held
        return Refreshed(
            AccessToken(f"access:{cache_blob}", time.time() + 3600),
            cache=f"{cache_blob}:rotated",
            from_identity_provider=True,
        )

    def start(self, scopes: list[str], redirect_uri: str, login_hint: str | None) -> dict[str, Any]:
        raise NotImplementedError

    def redeem(self, flow: dict[str, Any], response: dict[str, str]) -> Grant:
        raise NotImplementedError

    def revoke(self, cache_blob: str) -> bool:
        raise NotImplementedError

    def admin_consent_url(self, scopes: list[str], redirect_uri: str) -> str | None:
        return None

    def revoke_token(self, token: str) -> None:
        raise NotImplementedError

    def revocable_token(self, cache_blob: str) -> str | None:
        return None

    def close(self) -> None:
        pass


@pytest.fixture
async def small_engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the test database whose pool holds two connections and no more."""
    url = make_url(migrated_database_url)
    if url.get_backend_name() == "sqlite":
        engine = create_engine(DatabaseSettings(url=migrated_database_url, pool_size=2))
    else:
        engine = create_async_engine(url, pool_size=2, max_overflow=0, pool_timeout=60)
    yield engine
    await engine.dispose()


async def test_concurrent_cold_refreshes_fit_a_pool_of_two(
    stores: Stores, small_engine: AsyncEngine, tmp_path: Path
) -> None:
    keys = FileKeySource(tmp_path / "keys.json", create_if_missing=True)
    account = await stores.accounts.create_account("acme")
    mailboxes: list[Mailbox] = []
    setup_vault = TokenVault(stores.sessions, keys, stores.scrubber)
    for number in range(MAILBOXES):
        mailbox = await stores.connected_mailbox(account.id, f"box{number}@contoso.example")
        await setup_vault.store_tokens(mailbox.id, f"blob{number}".encode(), expected_version=None)
        mailboxes.append(mailbox)

    # A fresh vault: no data key is cached, so every refresh also reads its wrapped key.
    vault = TokenVault(create_session_factory(small_engine), keys, stores.scrubber)
    identity = RefreshingIdentity()
    identities: dict[str, IdentityClient] = {"microsoft": identity}
    tokens = AccessTokens(
        vault,
        identities,
        PrometheusTelemetry(CollectorRegistry()),
        DatabaseLocks(small_engine),
        attempts=1,
    )
    async with asyncio.timeout(30):
        answers = await asyncio.gather(*(tokens.get(mailbox) for mailbox in mailboxes))

    assert answers == [f"access:blob{number}" for number in range(MAILBOXES)]
    assert sorted(identity.refreshed) == sorted(f"blob{number}" for number in range(MAILBOXES))
    async with stores.sessions() as session:
        records = (await session.scalars(select(TokenRecord))).all()
    assert {record.mailbox_id: record.version for record in records} == {
        mailbox.id: 2 for mailbox in mailboxes
    }
    for number, mailbox in enumerate(mailboxes):
        stored = await setup_vault.load_tokens(mailbox.id)
        assert stored is not None and stored.plaintext == f"blob{number}:rotated".encode()
