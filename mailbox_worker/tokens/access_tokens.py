"""Fresh access tokens for mailboxes: cached in memory, refreshed once at a time, persisted.

``AccessTokens.get`` answers from memory while a token has more than ``REFRESH_MARGIN`` left,
otherwise it refreshes under the mailbox's lock: an asyncio lock (one refresh per mailbox in
this process) and a database lock (one across processes on PostgreSQL). Inside the lock it
reads the vault, so a refresh another process just stored is reused (msal answers from the
stored cache without calling the token endpoint), and it stores msal's rotated cache before
answering. The vault reads and writes on the connection that holds the database lock, so a
refresh pins one pooled connection, never waits for a second, and its store commits as the
lock is released. Transient identity failures are retried with
exponential backoff; they never mark a mailbox broken. A dead grant raises ``ReauthRequired``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncConnection
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from mailbox_worker.db.locks import DatabaseLocks
from mailbox_worker.db.models import Mailbox
from mailbox_worker.errors import (
    IdentityMisconfigured,
    ReauthRequired,
    TokenRecordChanged,
    TransientError,
)
from mailbox_worker.policy.scopes import required_scopes
from mailbox_worker.telemetry import Telemetry
from mailbox_worker.tokens.identity_client import AccessToken, IdentityClient
from mailbox_worker.tokens.vault import TokenVault

log = logging.getLogger(__name__)

REFRESH_MARGIN = 300.0  # seconds: refresh ahead of expiry, as msal does


class AccessTokens:
    def __init__(
        self,
        vault: TokenVault,
        identities: Mapping[str, IdentityClient],
        telemetry: Telemetry,
        locks: DatabaseLocks,
        *,
        attempts: int = 4,
        initial_wait: float = 0.5,
    ) -> None:
        self._vault = vault
        self._identities = identities
        self._telemetry = telemetry
        self._database_locks = locks
        self._cache: dict[str, AccessToken] = {}
        self._rejected: dict[str, str] = {}  # mailbox id -> the token its provider refused
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._attempts = attempts
        self._initial_wait = initial_wait

    async def get(self, mailbox: Mailbox, *, force_refresh: bool = False) -> str:
        """An access token valid for at least a few minutes for ``mailbox``."""
        cached = self._cache.get(mailbox.id)
        if cached is not None and not force_refresh and _fresh(cached):
            return cached.token
        async with self._locks[mailbox.id]:
            cached = self._cache.get(mailbox.id)
            if cached is not None and _fresh(cached) and not force_refresh:
                return cached.token  # another task refreshed while we waited
            if force_refresh and cached is not None and not _fresh(cached, margin=0):
                force_refresh = False  # it expired anyway: a plain refresh will do
            token = await self._refresh_with_retries(mailbox, force_refresh)
            rejected = self._rejected.pop(mailbox.id, None)
            if token.token == rejected:
                # The library's cache still holds the token the provider refused (revoked
                # early, e.g. by continuous access evaluation): redeem the refresh token.
                token = await self._refresh_with_retries(mailbox, True)
            self._cache[mailbox.id] = token
            return token.token

    def forget(self, mailbox_id: str) -> None:
        """Drop the cached access token (disconnect, lost grant, re-consent)."""
        self._cache.pop(mailbox_id, None)
        self._rejected.pop(mailbox_id, None)

    def reject(self, mailbox_id: str, token: str) -> None:
        """The provider refused ``token`` (401): the next ``get`` returns a different one.

        Many jobs may report the same refused token at once; only the first causes a refresh,
        the others find the new token already cached.
        """
        cached = self._cache.get(mailbox_id)
        if cached is None or cached.token == token:
            log.info("access token rejected for mailbox %s; will refresh", mailbox_id)
            self._cache.pop(mailbox_id, None)
            self._rejected[mailbox_id] = token

    async def _refresh_with_retries(self, mailbox: Mailbox, force: bool) -> AccessToken:
        retrying = AsyncRetrying(
            # A refusal of our app itself will not pass in seconds: the job waits instead.
            retry=retry_if_exception_type((TransientError, TokenRecordChanged))
            & retry_if_not_exception_type(IdentityMisconfigured),
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential_jitter(multiplier=self._initial_wait, max=10.0),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                key = f"token-refresh:{mailbox.id}"
                async with self._database_locks.hold_connection(key) as connection:
                    return await self._refresh_once(mailbox, force, connection)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _refresh_once(
        self, mailbox: Mailbox, force: bool, connection: AsyncConnection | None
    ) -> AccessToken:
        identity = self._identities.get(mailbox.provider)
        if identity is None:
            raise ReauthRequired(
                f"no OAuth app is configured for {mailbox.provider}",
                code="provider_unconfigured",
            )
        stored = await self._vault.load_tokens(mailbox.id, connection)
        if stored is None:
            raise ReauthRequired("the mailbox holds no tokens", code="no_grant")
        scopes = list(required_scopes(mailbox.provider, mailbox.capabilities))
        try:
            refreshed = await asyncio.to_thread(
                identity.refresh, stored.plaintext.decode(), scopes, force=force
            )
        except ReauthRequired as error:
            # Re-read before declaring the grant dead: another process may have rotated it.
            latest = await self._vault.load_tokens(mailbox.id, connection)
            if latest is not None and latest.version != stored.version:
                raise TokenRecordChanged("tokens rotated concurrently") from error
            self._telemetry.token_refresh(mailbox.provider, error.code)
            raise
        except TransientError as error:
            self._telemetry.token_refresh(mailbox.provider, error.code)
            raise
        if refreshed.cache is not None:
            await self._vault.store_tokens(
                mailbox.id,
                refreshed.cache.encode(),
                expected_version=stored.version,
                connection=connection,
            )
        if refreshed.from_identity_provider:
            self._telemetry.token_refresh(mailbox.provider, "ok")
        return refreshed.access_token


def _fresh(token: AccessToken, margin: float = REFRESH_MARGIN) -> bool:
    return token.expires_at - time.time() > margin
