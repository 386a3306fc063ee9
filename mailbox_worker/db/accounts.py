"""Accounts, API keys and the audit trail: every query about who may do what, in one place.

API keys look like ``mwk_<key id>_<secret>``; only the SHA-256 digest of the whole key is
stored (the secret has 256 bits of entropy, so a fast digest is the right tool), and it is
shown once, at creation.

An account also lists the origins its admins may be sent back to after a consent (return
origins, normalised by ``policy.origins``); the daemon's own origin is allowed besides.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailbox_worker.clock import Clock, new_id, utcnow
from mailbox_worker.db.models import Account, AccountReturnOrigin, ApiKey, AuditEvent
from mailbox_worker.policy.origins import normalise_origin

PERMISSIONS: frozenset[str] = frozenset(
    {
        "jobs:read",
        "jobs:write",
        "mailboxes:read",
        "mailboxes:write",
        "account:read",
        "account:write",
    }
)
MAX_RETURN_ORIGINS = 20
KEY_PREFIX = "mwk_"
KEY_CACHE_TTL = dt.timedelta(seconds=2)
"""How long a process trusts a key it verified without reading it again: a key revoked by
another process (``keys revoke``, an account erasure) stops working there within this time;
in the process that revokes it, at once. Only valid keys are kept (a wrong one is read each
time), by the digest of the whole key, never the key itself."""
KEY_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    account_id: str
    secret: str  # shown once; never stored

    def __repr__(self) -> str:
        return f"IssuedKey(key_id={self.key_id!r}, account_id={self.account_id!r})"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class AccountStore:
    """Accounts, API keys and audit events."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock = utcnow,
        key_cache_ttl: dt.timedelta = KEY_CACHE_TTL,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._key_cache_ttl = key_cache_ttl
        self._verified: dict[str, tuple[ApiKey, dt.datetime]] = {}
        """Keys this process verified lately, by the digest of the whole presented key, with
        when the entry lapses (``authenticate``)."""

    async def create_account(self, name: str) -> Account:
        """Create an account and audit it."""
        account = Account(id=new_id("acc"), name=name, created_at=self._clock())
        async with self._sessions.begin() as session:
            session.add(account)
            session.add(
                _audit("cli", account.id, "account.created", account.id, {}, account.created_at)
            )
        return account

    async def get_account(self, account_id: str) -> Account | None:
        async with self._sessions() as session:
            return await session.get(Account, account_id)

    async def list_accounts(self) -> list[Account]:
        async with self._sessions() as session:
            return list((await session.scalars(select(Account).order_by(Account.created_at))).all())

    async def return_origins(self, account_id: str) -> list[str]:
        """The account's declared return origins, normalised and sorted (empty if none)."""
        query = (
            select(AccountReturnOrigin.origin)
            .where(AccountReturnOrigin.account_id == account_id)
            .order_by(AccountReturnOrigin.origin)
        )
        async with self._sessions() as session:
            return list((await session.scalars(query)).all())

    async def set_return_origins(
        self, account_id: str, origins: list[str], actor: str
    ) -> list[str]:
        """Replace the account's return origins with ``origins`` (normalised, duplicates
        dropped) in one transaction, audited; returns them as stored.

        ``ValueError`` naming the first origin that is not one (nothing is changed), or
        for more than ``MAX_RETURN_ORIGINS``; ``LookupError`` for an unknown account.
        """
        normalised: set[str] = set()
        for origin in origins:
            try:
                normalised.add(normalise_origin(origin))
            except ValueError as error:
                raise ValueError(f"the origin {origin[:300]!r} {error}") from None
        if len(normalised) > MAX_RETURN_ORIGINS:
            raise ValueError(f"an account may declare at most {MAX_RETURN_ORIGINS} origins")
        now = self._clock()
        async with self._sessions.begin() as session:
            if await session.get(Account, account_id, with_for_update=True) is None:
                raise LookupError(f"no account {account_id}")
            previous = set(
                (
                    await session.scalars(
                        select(AccountReturnOrigin.origin).where(
                            AccountReturnOrigin.account_id == account_id
                        )
                    )
                ).all()
            )
            await session.execute(
                delete(AccountReturnOrigin).where(
                    AccountReturnOrigin.account_id == account_id,
                    AccountReturnOrigin.origin.not_in(normalised),
                )
            )
            for origin in normalised - previous:
                session.add(
                    AccountReturnOrigin(account_id=account_id, origin=origin, created_at=now)
                )
            if normalised != previous:
                session.add(
                    _audit(
                        actor,
                        account_id,
                        "account.return_origins_changed",
                        account_id,
                        {
                            "added": sorted(normalised - previous),
                            "removed": sorted(previous - normalised),
                        },
                        now,
                    )
                )
        return sorted(normalised)

    async def create_api_key(
        self, account_id: str, name: str, permissions: frozenset[str]
    ) -> IssuedKey:
        """Issue a key with ``permissions`` (from ``PERMISSIONS``); its secret is shown once."""
        unknown = permissions - PERMISSIONS
        if unknown:
            raise ValueError(f"unknown permissions: {', '.join(sorted(unknown))}")
        key_id = uuid.uuid4().hex[:16]
        secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        async with self._sessions.begin() as session:
            if await session.get(Account, account_id) is None:
                raise LookupError(f"no account {account_id}")
            session.add(
                ApiKey(
                    id=key_id,
                    account_id=account_id,
                    name=name,
                    secret_sha256=_digest(secret),
                    permissions=sorted(permissions),
                    created_at=self._clock(),
                )
            )
            session.add(
                _audit(
                    "cli",
                    account_id,
                    "api_key.created",
                    key_id,
                    {"permissions": sorted(permissions)},
                    self._clock(),
                )
            )
        return IssuedKey(key_id=key_id, account_id=account_id, secret=secret)

    async def revoke_api_key(self, key_id: str) -> bool:
        self._forget_verified(key_id)
        async with self._sessions.begin() as session:
            key = await session.get(ApiKey, key_id)
            if key is None or key.revoked_at is not None:
                return False
            now = self._clock()
            key.revoked_at = now
            session.add(_audit("cli", key.account_id, "api_key.revoked", key_id, {}, now))
        return True

    async def authenticate(self, presented: str) -> ApiKey | None:
        """The key row a presented key names, or None for an unknown, malformed or revoked
        key (the whole key's digest must match)."""
        if not presented.startswith(KEY_PREFIX):
            return None
        key_id, _, rest = presented[len(KEY_PREFIX) :].partition("_")
        if not key_id or not rest:
            return None
        digest = _digest(presented)
        now = self._clock()
        cached = self._verified.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        key = await self.active_key(key_id)
        if key is None or not hmac.compare_digest(key.secret_sha256, digest):
            return None
        if self._key_cache_ttl > dt.timedelta(0):
            if len(self._verified) >= KEY_CACHE_SIZE:
                self._verified.clear()
            self._verified[digest] = (key, now + self._key_cache_ttl)
        return key

    def _forget_verified(self, key_id: str) -> None:
        """Drop ``key_id`` from this process's verified keys (it is being revoked)."""
        for digest, (key, _) in list(self._verified.items()):
            if key.id == key_id:
                del self._verified[digest]

    async def active_key(self, key_id: str) -> ApiKey | None:
        """An existing, unrevoked key row by its id (for sessions that were opened by
        presenting the full key once)."""
        async with self._sessions() as session:
            key = await session.get(ApiKey, key_id)
        if key is None or key.revoked_at is not None:
            return None
        return key

    async def audit(
        self,
        actor: str,
        account_id: str | None,
        action: str,
        target: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append one audit event (never a secret nor message content in ``detail``)."""
        async with self._sessions.begin() as session:
            session.add(_audit(actor, account_id, action, target, detail or {}, self._clock()))

    async def audit_events(self, account_id: str | None = None) -> list[AuditEvent]:
        query = select(AuditEvent).order_by(AuditEvent.id)
        if account_id is not None:
            query = query.where(AuditEvent.account_id == account_id)
        async with self._sessions() as session:
            return list((await session.scalars(query)).all())


def _audit(
    actor: str,
    account_id: str | None,
    action: str,
    target: str | None,
    detail: dict[str, Any],
    at: dt.datetime,
) -> AuditEvent:
    return AuditEvent(
        at=at, actor=actor, account_id=account_id, action=action, target=target, detail=detail
    )


def audit_row(
    actor: str,
    account_id: str | None,
    action: str,
    target: str | None,
    detail: dict[str, Any],
    at: dt.datetime,
) -> AuditEvent:
    """An audit row, made at ``at``, to add inside a caller's own transaction."""
    return _audit(actor, account_id, action, target, detail, at)
