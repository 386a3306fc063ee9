"""Revoking grants at the provider, now or later.

Disconnect tries the provider at once; if it cannot be reached, the token to revoke is kept
sealed under a key of its own in ``pending_revocations`` and retried with exponential
backoff until the provider confirms, or until the token cannot be alive any more
(``GIVE_UP_AFTER``), then the row — ciphertext and key — is deleted, its freed storage
scrubbed (docs/erasure.md), and the outcome audited.

Retrying processes lease the rows they retry (``db/leases.py``), so several daemons on one
database call the provider once per attempt, not once each.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping

from sqlalchemy import delete, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailbox_worker.clock import Clock, new_id, utcnow
from mailbox_worker.db.accounts import AccountStore
from mailbox_worker.db.erasure import StorageScrubber
from mailbox_worker.db.leases import claim_statement, held_by
from mailbox_worker.db.models import Mailbox, PendingRevocation
from mailbox_worker.db.outage import is_database_unavailable
from mailbox_worker.errors import TransientError
from mailbox_worker.periodic import Periodic, exponential_backoff
from mailbox_worker.telemetry import Telemetry
from mailbox_worker.tokens.identity_client import IdentityClient
from mailbox_worker.tokens.vault import TokenVault

log = logging.getLogger(__name__)

FIRST_RETRY = dt.timedelta(seconds=30)
LONGEST_WAIT = dt.timedelta(hours=1)
GIVE_UP_AFTER = dt.timedelta(days=30)
BATCH = 100
"""Rows leased by one pass; they are retried one after the other."""
LEASE = dt.timedelta(minutes=30)
"""How long a batch is held: far longer than ``BATCH`` calls to an identity provider."""


class Revocations:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        vault: TokenVault,
        identities: Mapping[str, IdentityClient],
        accounts: AccountStore,
        scrubber: StorageScrubber,
        clock: Clock = utcnow,
        owner: str | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._telemetry = telemetry  # counts the failed passes of the retry loop
        self._sessions = sessions
        self._vault = vault
        self._identities = identities
        self._accounts = accounts
        self._scrubber = scrubber
        self._clock = clock
        self.owner = new_id("revoker") if owner is None else owner

    async def revoke(self, mailbox: Mailbox, token_blob: str | None) -> str:
        """Revoke the mailbox's grant; returns ``revoked``, ``not_available`` or ``pending``."""
        identity = self._identities.get(mailbox.provider)
        token = identity.revocable_token(token_blob) if identity and token_blob else None
        if identity is None or token is None:
            return "not_available"
        try:
            await asyncio.to_thread(identity.revoke_token, token)
        except TransientError as error:
            await self._defer(mailbox, token, error.code)
            return "pending"
        return "revoked"

    async def _defer(self, mailbox: Mailbox, token: str, code: str) -> None:
        record_id = new_id("rev")
        kek_id, wrapped, sealed = await self._vault.seal_standalone(record_id, token.encode())
        now = self._clock()
        async with self._sessions.begin() as session:
            session.add(
                PendingRevocation(
                    id=record_id,
                    mailbox_id=mailbox.id,
                    account_id=mailbox.account_id,
                    provider=mailbox.provider,
                    kek_id=kek_id,
                    wrapped_key=wrapped,
                    sealed_token=sealed,
                    attempts=1,
                    next_attempt_at=now + FIRST_RETRY,
                    give_up_at=now + GIVE_UP_AFTER,
                    last_error=code,
                    created_at=now,
                )
            )
        log.warning("revocation for mailbox %s deferred (%s)", mailbox.id, code)

    async def pending(self) -> list[PendingRevocation]:
        async with self._sessions() as session:
            return list((await session.scalars(select(PendingRevocation))).all())

    async def claim(
        self, limit: int, lease: dt.timedelta, *, everything: bool = False
    ) -> list[PendingRevocation]:
        """Lease up to ``limit`` due rows (any row nobody holds, with ``everything``) to this
        process until ``now + lease``; no other process gets them while the lease holds."""
        if limit <= 0:
            return []
        now = self._clock()
        due = true() if everything else PendingRevocation.next_attempt_at <= now
        claim = claim_statement(PendingRevocation, due, None, limit, self.owner, now, lease)
        async with self._sessions.begin() as session:
            return list((await session.scalars(claim)).all())

    async def retry_due(self, *, everything: bool = False) -> int:
        """Retry the revocations that are due (all of them with ``everything``) and that no
        other process is retrying; returns how many were settled (revoked or given up)."""
        due = await self.claim(BATCH, LEASE, everything=everything)
        now = self._clock()
        settled = 0
        for row in due:
            settled += await self._retry(row, now)
        return settled

    async def _retry(self, row: PendingRevocation, now: dt.datetime) -> int:
        identity = self._identities.get(row.provider)
        outcome = "gave_up"
        if identity is not None and now < row.give_up_at:
            token = await self._vault.open_standalone(
                row.id, row.kek_id, row.wrapped_key, row.sealed_token
            )
            try:
                await asyncio.to_thread(identity.revoke_token, token.decode())
                outcome = "revoked"
            except TransientError as error:
                wait = exponential_backoff(FIRST_RETRY, row.attempts, LONGEST_WAIT)
                async with self._sessions.begin() as session:
                    await session.execute(
                        update(PendingRevocation)
                        .where(held_by(PendingRevocation, row.id, self.owner))
                        .values(
                            attempts=row.attempts + 1,
                            next_attempt_at=now + wait,
                            last_error=error.code,
                            lease_owner=None,
                            lease_expires_at=None,
                        )
                    )
                return 0
        async with self._sessions.begin() as session:
            deleted = await session.execute(
                delete(PendingRevocation).where(PendingRevocation.id == row.id)
            )
        if not deleted.rowcount:  # type: ignore[attr-defined]
            return 0  # another process settled it after this one's lease ran out
        await self._scrubber.after_erasure()
        await self._accounts.audit(
            "system", row.account_id, "mailbox.revocation", row.mailbox_id, {"outcome": outcome}
        )
        return 1

    async def run(self, stop: asyncio.Event, interval: float = 15.0) -> None:
        """Retry due revocations every ``interval`` seconds until ``stop`` is set."""
        loop = Periodic(
            "revocation retry",
            self.retry_due,
            interval,
            name="revocations",
            telemetry=self._telemetry,
            database_unavailable=is_database_unavailable,
            logger=log,
        )
        await loop.run(stop)
