"""Mailboxes and their pending OAuth authorizations: every mailbox query in one place.

Mailbox states: ``pending_consent → connected ⇄ reauth_required → disconnected`` (terminal).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence

from sqlalchemy import and_, delete, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailbox_worker.clock import Clock, new_id, utcnow
from mailbox_worker.db.accounts import audit_row
from mailbox_worker.db.models import Mailbox, OAuthState, OutboxEvent
from mailbox_worker.events.outbox import outbox_row
from mailbox_worker.policy.identities import AccountId
from mailbox_worker.states import MailboxState

LIMIT_NAMES = ("max_concurrency", "rate_per_minute", "daily_recipient_cap")
"""The sending limits a mailbox may set for itself (docs/architecture.md#mailbox-limits)."""


def state_digest(state: str) -> str:
    """OAuth ``state`` values are stored only as digests; the raw value is a bearer secret."""
    return hashlib.sha256(state.encode()).hexdigest()


def pinned_account(mailbox: Mailbox) -> AccountId | None:
    """The account ``mailbox`` is pinned to, or None (not yet connected, or connected before
    pinning existed)."""
    if mailbox.identity_subject is None:
        return None
    return AccountId(mailbox.identity_tenant, mailbox.identity_subject)


class MailboxStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock = utcnow) -> None:
        self._sessions = sessions
        self._clock = clock

    async def create(
        self, account_id: str, provider: str, capabilities: Sequence[str], actor: str
    ) -> Mailbox:
        """A new mailbox waiting for its admin's consent."""
        now = self._clock()
        mailbox = Mailbox(
            id=new_id("mbx"),
            account_id=account_id,
            provider=provider,
            capabilities=sorted(set(capabilities)),
            address=None,
            identity_tenant=None,
            identity_subject=None,
            state=MailboxState.PENDING_CONSENT,
            state_reason=None,
            granted_scopes=[],
            created_at=now,
            updated_at=now,
        )
        async with self._sessions.begin() as session:
            session.add(mailbox)
            session.add(
                audit_row(
                    actor,
                    account_id,
                    "mailbox.created",
                    mailbox.id,
                    {"provider": provider, "capabilities": mailbox.capabilities},
                    now,
                )
            )
        return mailbox

    async def get(self, mailbox_id: str, account_id: str | None = None) -> Mailbox | None:
        """The mailbox, or None when it does not exist or belongs to another account."""
        async with self._sessions() as session:
            mailbox = await session.get(Mailbox, mailbox_id)
        if mailbox is None or (account_id is not None and mailbox.account_id != account_id):
            return None
        return mailbox

    async def count_by_state(self, providers: Sequence[str]) -> dict[tuple[str, str], int]:
        """Mailboxes by ``(provider, state)``: every pair of ``providers`` and
        ``MailboxState`` present (0 when none), so a gauge falls back to 0."""
        query = select(Mailbox.provider, Mailbox.state, func.count()).group_by(
            Mailbox.provider, Mailbox.state
        )
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        counts = {(provider, state.value): 0 for provider in providers for state in MailboxState}
        counts.update({(provider, state): int(count) for provider, state, count in rows})
        return counts

    async def list(
        self,
        account_id: str,
        *,
        limit: int | None = None,
        after: tuple[dt.datetime, str] | None = None,
        include_disconnected: bool = True,
    ) -> list[Mailbox]:
        """The account's mailboxes, oldest first (ties: the smaller id first): at most
        ``limit`` (None: all), starting after ``after`` (the ``(created_at, id)`` of the
        previous page's last row; keyset, through ``ix_mailboxes_account_id_created_at_id``)."""
        conditions = [Mailbox.account_id == account_id]
        if not include_disconnected:
            conditions.append(Mailbox.state != MailboxState.DISCONNECTED)
        if after is not None:
            conditions.append(tuple_(Mailbox.created_at, Mailbox.id) > tuple_(*after))
        query = (
            select(Mailbox).where(*conditions).order_by(Mailbox.created_at, Mailbox.id).limit(limit)
        )
        async with self._sessions() as session:
            return list((await session.scalars(query)).all())

    async def set_state(
        self,
        mailbox_id: str,
        state: str,
        reason: str | None,
        *,
        expected: Sequence[str],
        announce: OutboxEvent | None = None,
    ) -> bool:
        """Move the mailbox to ``state`` if it is in one of ``expected``; True if it moved.

        ``announce`` (an ``outbox_row``) is committed with the move, and only if it moved.
        The row is locked first (``lock_for_state_change``).
        """
        async with self._sessions.begin() as session:
            await lock_for_state_change(session, mailbox_id)
            result = await session.execute(
                update(Mailbox)
                .where(Mailbox.id == mailbox_id, Mailbox.state.in_(expected))
                .values(state=state, state_reason=reason, updated_at=self._clock())
            )
            moved = bool(result.rowcount)  # type: ignore[attr-defined]
            if moved and announce is not None:
                session.add(announce)
        return moved

    async def require_consent_again(self, mailbox: Mailbox, reason: str, actor: str) -> bool:
        """Move a connected mailbox to ``reauth_required``; True if this call moved it.

        The state change, its audit row and the ``mailbox.reauth_required`` event for the
        invoicing app commit together: the app hears of every lost grant, exactly once. The
        row is locked first (``lock_for_state_change``), so an enqueue that checked its jobs
        against the connected mailbox commits before this change, and the worker's sweep of
        the mailbox's queued jobs that follows it sees them.
        """
        async with self._sessions.begin() as session:
            await lock_for_state_change(session, mailbox.id)
            result = await session.execute(
                update(Mailbox)
                .where(Mailbox.id == mailbox.id, Mailbox.state == MailboxState.CONNECTED)
                .values(
                    state=MailboxState.REAUTH_REQUIRED,
                    state_reason=reason,
                    updated_at=self._clock(),
                )
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return False
            detail = {"provider": mailbox.provider, "reason": reason}
            session.add(
                audit_row(
                    actor,
                    mailbox.account_id,
                    "mailbox.reauth_required",
                    mailbox.id,
                    detail,
                    self._clock(),
                )
            )
            session.add(
                outbox_row(
                    mailbox.account_id,
                    "mailbox.reauth_required",
                    {"mailbox_id": mailbox.id, **detail},
                    self._clock(),
                )
            )
        return True

    async def mark_connected(
        self,
        mailbox_id: str,
        address: str,
        granted_scopes: Sequence[str],
        *,
        account: AccountId | None = None,
        announce: OutboxEvent | None = None,
    ) -> bool:
        """Record a completed consent; True if recorded. ``announce`` is committed with it,
        and only then.

        Not recorded (False) when the mailbox was disconnected meanwhile, or when ``account``
        is given and the mailbox is pinned to another account: a pinned account is never
        replaced. ``account`` pins an unpinned mailbox; None leaves the pinned account as it
        is (for rows made outside a consent: tests, benchmarks). The row is locked first
        (``lock_for_state_change``).
        """
        conditions = [Mailbox.id == mailbox_id, Mailbox.state != MailboxState.DISCONNECTED]
        values: dict[str, object] = {
            "state": MailboxState.CONNECTED,
            "state_reason": None,
            "address": address,
            "granted_scopes": sorted(granted_scopes),
            "updated_at": self._clock(),
        }
        if account is not None:
            conditions.append(
                or_(
                    Mailbox.identity_subject.is_(None),
                    and_(
                        Mailbox.identity_subject == account.subject,
                        Mailbox.identity_tenant.is_not_distinct_from(account.tenant),
                    ),
                )
            )
            values.update(identity_tenant=account.tenant, identity_subject=account.subject)
        async with self._sessions.begin() as session:
            await lock_for_state_change(session, mailbox_id)
            result = await session.execute(update(Mailbox).where(*conditions).values(values))
            recorded = bool(result.rowcount)  # type: ignore[attr-defined]
            if recorded and announce is not None:
                session.add(announce)
        return recorded

    async def pause(self, mailbox_id: str, until: dt.datetime, reason: str) -> bool:
        """No worker claims the mailbox's jobs before ``until`` (e.g. a 429's Retry-After);
        True if this moved the pause later. A pause already reaching further is kept."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(Mailbox)
                .where(
                    Mailbox.id == mailbox_id,
                    or_(Mailbox.paused_until.is_(None), Mailbox.paused_until < until),
                )
                .values(paused_until=until, pause_reason=reason)
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def set_limits(
        self, mailbox_id: str, limits: Mapping[str, int | None], actor: str
    ) -> bool:
        """Set some of the mailbox's sending limits (``LIMIT_NAMES``; None: the provider's
        default), with an audit row in the same transaction; False if there is no such
        mailbox."""
        unknown = set(limits) - set(LIMIT_NAMES)
        if unknown:
            raise ValueError(f"not a mailbox limit: {sorted(unknown)}")
        now = self._clock()
        async with self._sessions.begin() as session:
            mailbox = await session.get(Mailbox, mailbox_id, with_for_update=True)
            if mailbox is None:
                return False
            before = {name: getattr(mailbox, name) for name in limits}
            await session.execute(
                update(Mailbox).where(Mailbox.id == mailbox_id).values(updated_at=now, **limits)
            )
            session.add(
                audit_row(
                    actor,
                    mailbox.account_id,
                    "mailbox.limits_changed",
                    mailbox_id,
                    {"before": before, "after": dict(limits)},
                    now,
                )
            )
        return True

    async def save_authorization(
        self,
        state: str,
        account_id: str,
        mailbox_id: str,
        sealed_flow: bytes,
        return_url: str | None,
        lifetime: dt.timedelta,
    ) -> None:
        """Remember a pending authorization under the digest of its ``state``."""
        now = self._clock()
        async with self._sessions.begin() as session:
            session.add(
                OAuthState(
                    state_sha256=state_digest(state),
                    account_id=account_id,
                    mailbox_id=mailbox_id,
                    sealed_flow=sealed_flow,
                    return_url=return_url,
                    created_at=now,
                    expires_at=now + lifetime,
                )
            )

    async def consume_authorization(self, state: str) -> OAuthState | None:
        """Take a pending authorization exactly once: it is deleted as it is read.

        Returns None for an unknown or already used ``state``; the caller checks expiry.
        """
        async with self._sessions.begin() as session:
            row = await session.get(OAuthState, state_digest(state))
            if row is None:
                return None
            result = await session.execute(
                delete(OAuthState).where(OAuthState.state_sha256 == row.state_sha256)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return None  # another request consumed it first
        return row


async def lock_for_state_change(session: AsyncSession, mailbox_id: str) -> None:
    """Lock the mailbox's row ``FOR UPDATE`` in ``session`` before its state changes.

    A plain ``UPDATE`` of the state takes ``FOR NO KEY UPDATE``, which does not conflict with
    the ``FOR KEY SHARE`` an enqueue holds on the row from its first statement to its commit
    (``JobStore.enqueue_for_mailboxes``, which reads the mailbox so, then checks the requests
    against it, then inserts); ``FOR UPDATE`` does. So a state change commits before an
    enqueue reads the mailbox, or after the enqueue commits, never in between: the state the
    jobs were made for is still the mailbox's when they become visible, and a consent's or a
    disconnect's sweep that runs after its change sees them (docs/architecture.md, "Enqueue
    and mailbox state"). Claims (``FOR NO KEY UPDATE``) still do not wait for enqueues.
    Nothing on SQLite, whose single writer serialises them.
    """
    await session.execute(select(Mailbox.id).where(Mailbox.id == mailbox_id).with_for_update())
