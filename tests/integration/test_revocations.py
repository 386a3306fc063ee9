"""Revocation at disconnect: at once when the provider answers, later when it does not.

The identity client is a recording fake (the Google sandbox path is covered end to end in
test_connect_google.py); the vault, the database and the retry bookkeeping are real.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text

from mailbox_worker.errors import TransientError
from mailbox_worker.mailboxes.revocations import Revocations
from mailbox_worker.policy.scopes import CAPABILITIES
from mailbox_worker.tokens.identity_client import Grant, Refreshed
from mailbox_worker.tokens.keys.file_source import FileKeySource
from mailbox_worker.tokens.vault import TokenVault

from .conftest import Stores

REFRESH_TOKEN = "fake-refresh-token-to-revoke-0123456789"


@dataclass
class FlakyRevoker:
    provider: str = "google"
    failures: int = 0
    revoked: list[str] = field(default_factory=list)
    capabilities: frozenset[str] = CAPABILITIES

    def start(self, scopes: list[str], redirect_uri: str, login_hint: str | None) -> dict[str, Any]:
        raise NotImplementedError

    def redeem(self, flow: dict[str, Any], response: dict[str, str]) -> Grant:
        raise NotImplementedError

    def refresh(self, cache_blob: str, scopes: list[str], *, force: bool) -> Refreshed:
        raise NotImplementedError

    def revocable_token(self, cache_blob: str) -> str | None:
        return cache_blob

    def revoke(self, cache_blob: str) -> bool:
        self.revoke_token(cache_blob)
        return True

    def admin_consent_url(self, scopes: list[str], redirect_uri: str) -> str | None:
        return None

    def revoke_token(self, token: str) -> None:
        if self.failures:
            self.failures -= 1
            raise TransientError("unreachable", code="revoke_unavailable")
        self.revoked.append(token)

    def close(self) -> None:
        return None


def vault_keys(tmp_path: Path) -> FileKeySource:
    return FileKeySource(tmp_path / "keys.json")


async def setup(
    stores: Stores, tmp_path: Path, failures: int
) -> tuple[Revocations, FlakyRevoker, TokenVault]:
    keys = FileKeySource(tmp_path / "keys.json", create_if_missing=True)
    vault = TokenVault(stores.sessions, keys, stores.scrubber)
    revoker = FlakyRevoker(failures=failures)
    revocations = Revocations(
        stores.sessions, vault, {"google": revoker}, stores.accounts, stores.scrubber
    )
    return revocations, revoker, vault


async def test_revoked_at_once_when_the_provider_answers(stores: Stores, tmp_path: Path) -> None:
    revocations, revoker, _ = await setup(stores, tmp_path, failures=0)
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.mailboxes.create(account.id, "google", ["send"], actor="t")
    assert await revocations.revoke(mailbox, REFRESH_TOKEN) == "revoked"
    assert revoker.revoked == [REFRESH_TOKEN]
    assert await revocations.pending() == []


async def test_deferred_revocation_is_sealed_and_retried_until_done(
    stores: Stores, tmp_path: Path
) -> None:
    revocations, revoker, vault = await setup(stores, tmp_path, failures=2)
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.mailboxes.create(account.id, "google", ["send"], actor="t")
    assert await revocations.revoke(mailbox, REFRESH_TOKEN) == "pending"
    [row] = await revocations.pending()
    assert row.attempts == 1
    assert REFRESH_TOKEN.encode() not in row.sealed_token
    async with stores.engine.connect() as connection:
        dump = str((await connection.execute(text("SELECT * FROM pending_revocations"))).all())
    assert REFRESH_TOKEN not in dump

    assert await revocations.retry_due() == 0  # not due yet: backoff
    assert await revocations.retry_due(everything=True) == 0  # provider still down
    [row] = await revocations.pending()
    assert row.attempts == 2
    assert row.next_attempt_at > row.created_at

    old_key = row.kek_id
    new_key = vault_keys(tmp_path).add_key().key_id
    await vault.rewrap_all()  # rotation re-wraps pending records too
    [row] = await revocations.pending()
    assert row.kek_id != old_key
    assert row.kek_id == new_key
    assert await revocations.retry_due(everything=True) == 1
    assert revoker.revoked == [REFRESH_TOKEN]
    assert await revocations.pending() == []
    events = await stores.accounts.audit_events(account.id)
    assert [e.detail for e in events if e.action == "mailbox.revocation"] == [
        {"outcome": "revoked"}
    ]


async def test_providers_without_revocation_report_it(stores: Stores, tmp_path: Path) -> None:
    revocations, _, _ = await setup(stores, tmp_path, failures=0)
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.mailboxes.create(account.id, "microsoft", ["send"], actor="t")
    assert await revocations.revoke(mailbox, "anything") == "not_available"
