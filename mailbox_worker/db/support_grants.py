"""Support-access grants (docs/privacy.md PP-3, LU-5): an account admin's express, limited
consent to let support staff see the account's job contents and mailbox details.

A grant covers one account, lasts at most ``MAX_HOURS`` and can be revoked; an account has
at most one active grant (granting again replaces it). Granting and revoking are audited
(``support.granted``, ``support.revoked``) as the API key that did it; every access made
under a grant is audited (``support.access``) by ``record_access``, in the transaction that
checks the grant is still active.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailbox_worker.clock import Clock, new_id, utcnow
from mailbox_worker.db.accounts import audit_row
from mailbox_worker.db.models import Account, SupportGrant

MAX_HOURS = 7 * 24
MAX_REASON = 500


class SupportGrantStore:
    """Grants, revokes, reads and uses support-access grants."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock = utcnow) -> None:
        self._sessions = sessions
        self._clock = clock

    async def grant(self, account_id: str, key_id: str, hours: int, reason: str) -> SupportGrant:
        """Grant support access to the account for ``hours`` (1 to ``MAX_HOURS``), replacing
        an active grant, audited as ``api_key:<key_id>``. ``ValueError`` for hours out of
        range or a blank or too long reason; ``LookupError`` for an unknown account."""
        reason = reason.strip()
        if not 1 <= hours <= MAX_HOURS:
            raise ValueError(f"hours must be from 1 to {MAX_HOURS}")
        if not reason or len(reason) > MAX_REASON:
            raise ValueError(f"a reason of 1 to {MAX_REASON} characters is required")
        now = self._clock()
        actor = f"api_key:{key_id}"
        async with self._sessions.begin() as session:
            if await session.get(Account, account_id, with_for_update=True) is None:
                raise LookupError(f"no account {account_id}")
            await _end_active(session, account_id, actor, now)
            grant = SupportGrant(
                id=new_id("sup"),
                account_id=account_id,
                granted_by=key_id,
                reason=reason,
                created_at=now,
                expires_at=now + dt.timedelta(hours=hours),
            )
            session.add(grant)
            detail: dict[str, Any] = {"grant": grant.id, "hours": hours}
            session.add(audit_row(actor, account_id, "support.granted", account_id, detail, now))
        return grant

    async def revoke(self, account_id: str, key_id: str) -> SupportGrant | None:
        """End the account's active grant now, audited; None when there was none."""
        now = self._clock()
        async with self._sessions.begin() as session:
            if await session.get(Account, account_id, with_for_update=True) is None:
                return None
            return await _end_active(session, account_id, f"api_key:{key_id}", now)

    async def active(self, account_id: str) -> SupportGrant | None:
        """The account's active grant (unrevoked, unexpired), or None."""
        async with self._sessions() as session:
            return await _active(session, account_id, self._clock())

    async def record_access(
        self, account_id: str, actor: str, subject: str, what: str
    ) -> SupportGrant | None:
        """Audit one access (``support.access``: ``what`` was seen of ``subject``) under the
        account's active grant and return the grant; None, and nothing audited, when no
        grant is active: the caller must then show nothing beyond metadata."""
        now = self._clock()
        async with self._sessions.begin() as session:
            grant = await _active(session, account_id, now)
            if grant is None:
                return None
            detail: dict[str, Any] = {"grant": grant.id, "what": what}
            session.add(audit_row(actor, account_id, "support.access", subject, detail, now))
            return grant


async def _active(session: AsyncSession, account_id: str, now: dt.datetime) -> SupportGrant | None:
    query = (
        select(SupportGrant)
        .where(
            SupportGrant.account_id == account_id,
            SupportGrant.revoked_at.is_(None),
            SupportGrant.expires_at > now,
        )
        .order_by(SupportGrant.created_at.desc())
        .limit(1)
    )
    return (await session.scalars(query)).first()


async def _end_active(
    session: AsyncSession, account_id: str, actor: str, now: dt.datetime
) -> SupportGrant | None:
    """Revoke the account's active grant, audited; the grant, or None when there was none."""
    grant = await _active(session, account_id, now)
    if grant is None:
        return None
    grant.revoked_at = now
    detail: dict[str, Any] = {"grant": grant.id}
    session.add(audit_row(actor, account_id, "support.revoked", account_id, detail, now))
    return grant
