"""Everything the database holds about one account: read it out, pause it, delete it.

The queries behind the data rights of docs/privacy.md PP-7 (``mailboxes/account_rights.py``
orders them): ``export`` reads every row of the account into a JSON-ready document that holds
no secret; ``set_paused`` restricts or resumes its processing; ``delete_everything`` removes
every row of it, in one transaction, and leaves one ``account.erased`` audit record.

What counts as a secret, and so is never exported: API key digests, token records and data
keys (even as ciphertext), sealed authorizations and the digests of their ``state``, and
sealed pending revocations. Their existence is reported (a mailbox's ``tokens_stored``), not
their bytes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailbox_worker.clock import Clock, utcnow
from mailbox_worker.db.accounts import audit_row
from mailbox_worker.db.models import (
    Account,
    AccountReturnOrigin,
    ApiKey,
    AuditEvent,
    Job,
    JobContent,
    JobEvent,
    Mailbox,
    MailboxClaimHour,
    MailboxKey,
    OAuthState,
    OutboxEvent,
    PendingRevocation,
    SupportGrant,
    TokenRecord,
)

EXPORT_FORMAT = "mailbox-worker.account-export.v1"


@dataclass(frozen=True)
class PauseChange:
    """An account's pause after ``set_paused``; ``changed`` is False when it already was so."""

    account_id: str
    paused_at: dt.datetime | None
    changed: bool


class AccountData:
    """Reads, pauses and deletes all of one account's rows."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock = utcnow) -> None:
        self._sessions = sessions
        self._clock = clock

    async def export(self, account_id: str) -> dict[str, Any] | None:
        """Every row of the account as JSON-ready values, secrets left out (module
        docstring); None for an unknown account. Built in memory in one read transaction,
        so it is one consistent picture; its size is that of the account's job contents
        (attachments included), which the content purge bounds (docs/privacy.md PP-6)."""
        async with self._sessions.begin() as session:
            account = await session.get(Account, account_id)
            if account is None:
                return None
            return {
                "format": EXPORT_FORMAT,
                "exported_at": _time(self._clock()),
                "account": await _account(session, account),
                "api_keys": await _api_keys(session, account_id),
                "mailboxes": await _mailboxes(session, account_id),
                "pending_authorizations": await _authorizations(session, account_id),
                "jobs": await _jobs(session, account_id),
                "outbox_events": await _outbox_events(session, account_id),
                "pending_revocations": await _pending_revocations(session, account_id),
                "audit_events": await _audit_events(session, account_id),
                "support_grants": await _support_grants(session, account_id),
            }

    async def set_paused(self, account_id: str, paused: bool, actor: str) -> PauseChange | None:
        """Pause (``paused``) or resume the account, audited as ``account.paused`` or
        ``account.resumed`` when it changes; None for an unknown account."""
        now = self._clock()
        async with self._sessions.begin() as session:
            account = await session.get(Account, account_id, with_for_update=True)
            if account is None:
                return None
            if (account.paused_at is not None) == paused:
                return PauseChange(account_id, account.paused_at, changed=False)
            account.paused_at = now if paused else None
            action = "account.paused" if paused else "account.resumed"
            session.add(audit_row(actor, account_id, action, account_id, {}, now))
            return PauseChange(account_id, account.paused_at, changed=True)

    async def mailboxes(self, account_id: str) -> list[Mailbox]:
        """The account's mailboxes, every state."""
        async with self._sessions() as session:
            query = select(Mailbox).where(Mailbox.account_id == account_id).order_by(Mailbox.id)
            return list((await session.scalars(query)).all())

    async def pending_revocations(self, account_id: str) -> int:
        """How many of the account's grants still wait to be revoked at their provider."""
        async with self._sessions() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(PendingRevocation)
                .where(PendingRevocation.account_id == account_id)
            )
        return int(count or 0)

    async def delete_everything(
        self, account_id: str, actor: str, detail: dict[str, Any]
    ) -> dict[str, int] | None:
        """Delete every row of the account in one transaction and add the one audit record
        that remains, ``account.erased`` (its ids, ``detail`` and the counts of deleted rows:
        never personal data). None for an unknown account.

        A pending revocation is kept: it is the grant still to revoke at the provider, and is
        deleted (and scrubbed) once revoked or after 30 days (docs/erasure.md). The foreign
        keys' cascades are not relied on: SQLite enforces them only when asked."""
        async with self._sessions.begin() as session:
            if await session.get(Account, account_id, with_for_update=True) is None:
                return None
            mailbox_ids = await _ids(session, Mailbox.id, Mailbox.account_id == account_id)
            job_ids = await _ids(session, Job.id, Job.account_id == account_id)
            key_ids = await _ids(session, ApiKey.id, ApiKey.account_id == account_id)
            targets = [account_id, *mailbox_ids, *job_ids, *key_ids]
            steps: list[tuple[str, Any]] = [
                ("job_events", delete(JobEvent).where(JobEvent.job_id.in_(job_ids))),
                ("job_contents", delete(JobContent).where(JobContent.job_id.in_(job_ids))),
                ("jobs", delete(Job).where(Job.id.in_(job_ids))),
                ("outbox_events", delete(OutboxEvent).where(OutboxEvent.account_id == account_id)),
                (
                    "oauth_states",
                    delete(OAuthState).where(
                        or_(
                            OAuthState.account_id == account_id,
                            OAuthState.mailbox_id.in_(mailbox_ids),
                        )
                    ),
                ),
                (
                    "token_records",
                    delete(TokenRecord).where(TokenRecord.mailbox_id.in_(mailbox_ids)),
                ),
                ("mailbox_keys", delete(MailboxKey).where(MailboxKey.mailbox_id.in_(mailbox_ids))),
                (
                    "mailbox_claim_hours",
                    delete(MailboxClaimHour).where(MailboxClaimHour.mailbox_id.in_(mailbox_ids)),
                ),
                ("mailboxes", delete(Mailbox).where(Mailbox.id.in_(mailbox_ids))),
                ("api_keys", delete(ApiKey).where(ApiKey.id.in_(key_ids))),
                (
                    "account_return_origins",
                    delete(AccountReturnOrigin).where(AccountReturnOrigin.account_id == account_id),
                ),
                (
                    "support_grants",
                    delete(SupportGrant).where(SupportGrant.account_id == account_id),
                ),
                (
                    "audit_events",
                    delete(AuditEvent).where(
                        or_(AuditEvent.account_id == account_id, AuditEvent.target.in_(targets))
                    ),
                ),
                ("accounts", delete(Account).where(Account.id == account_id)),
            ]
            counts: dict[str, int] = {}
            for table, statement in steps:
                result = await session.execute(
                    statement.execution_options(synchronize_session=False)
                )
                counts[table] = int(getattr(result, "rowcount", 0) or 0)
            kept = await session.scalar(
                select(func.count())
                .select_from(PendingRevocation)
                .where(PendingRevocation.account_id == account_id)
            )
            record = {**detail, "deleted": counts, "revocations_pending": int(kept or 0)}
            session.add(
                audit_row(actor, account_id, "account.erased", account_id, record, self._clock())
            )
        return counts


async def _ids(session: AsyncSession, column: Any, condition: Any) -> list[str]:
    return list((await session.scalars(select(column).where(condition))).all())


def _time(moment: dt.datetime | None) -> str | None:
    """RFC 3339 UTC with ``Z``, as the API writes times."""
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _row(row: Any, columns: Sequence[str]) -> dict[str, Any]:
    """The named columns of ``row``, times as ISO 8601 strings."""
    values = {}
    for column in columns:
        value = getattr(row, column)
        values[column] = _time(value) if isinstance(value, dt.datetime) else value
    return values


async def _account(session: AsyncSession, account: Account) -> dict[str, Any]:
    origins = await session.scalars(
        select(AccountReturnOrigin.origin)
        .where(AccountReturnOrigin.account_id == account.id)
        .order_by(AccountReturnOrigin.origin)
    )
    return {
        **_row(account, ("id", "name", "created_at", "paused_at")),
        "return_origins": list(origins),
    }


async def _api_keys(session: AsyncSession, account_id: str) -> list[dict[str, Any]]:
    query = select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.created_at)
    columns = ("id", "name", "permissions", "created_at", "revoked_at")  # never the digest
    return [_row(key, columns) for key in await session.scalars(query)]


MAILBOX_COLUMNS = (
    "id",
    "provider",
    "capabilities",
    "address",
    "identity_tenant",
    "identity_subject",
    "state",
    "state_reason",
    "granted_scopes",
    "created_at",
    "updated_at",
    "max_concurrency",
    "rate_per_minute",
    "daily_recipient_cap",
    "paused_until",
    "pause_reason",
)


async def _mailboxes(session: AsyncSession, account_id: str) -> list[dict[str, Any]]:
    query = select(Mailbox).where(Mailbox.account_id == account_id).order_by(Mailbox.created_at)
    mailboxes = list((await session.scalars(query)).all())
    with_tokens = set(
        await session.scalars(
            select(TokenRecord.mailbox_id).where(
                TokenRecord.mailbox_id.in_([mailbox.id for mailbox in mailboxes])
            )
        )
    )
    return [
        {**_row(mailbox, MAILBOX_COLUMNS), "tokens_stored": mailbox.id in with_tokens}
        for mailbox in mailboxes
    ]


async def _authorizations(session: AsyncSession, account_id: str) -> list[dict[str, Any]]:
    query = select(OAuthState).where(OAuthState.account_id == account_id)
    columns = ("mailbox_id", "return_url", "created_at", "expires_at")  # never the sealed flow
    return [_row(state, columns) for state in await session.scalars(query)]


JOB_COLUMNS = (
    "id",
    "mailbox_id",
    "mode",
    "state",
    "reference",
    "idempotency_key",
    "request_sha256",
    "message_id",
    "attempts",
    "transient_failures",
    "priority",
    "send_at",
    "run_after",
    "deadline",
    "recipient_count",
    "claimed_at",
    "in_flight_since",
    "last_error_code",
    "last_error_message",
    "provider_message_id",
    "provider_draft_id",
    "web_link",
    "created_at",
    "updated_at",
    "finished_at",
)
EVENT_COLUMNS = ("at", "kind", "from_state", "to_state", "code", "detail", "provider_status")


async def _jobs(session: AsyncSession, account_id: str) -> list[dict[str, Any]]:
    """The account's jobs with the message each carries (the customer's own content) and
    its events, oldest first."""
    jobs = list(
        (
            await session.scalars(
                select(Job).where(Job.account_id == account_id).order_by(Job.created_at, Job.id)
            )
        ).all()
    )
    job_ids = [job.id for job in jobs]
    contents = {
        content.job_id: content.payload
        for content in await session.scalars(
            select(JobContent).where(JobContent.job_id.in_(job_ids))
        )
    }
    events: dict[str, list[dict[str, Any]]] = {job_id: [] for job_id in job_ids}
    for event in await session.scalars(
        select(JobEvent).where(JobEvent.job_id.in_(job_ids)).order_by(JobEvent.id)
    ):
        events[event.job_id].append({"id": event.public_id, **_row(event, EVENT_COLUMNS)})
    return [
        {**_row(job, JOB_COLUMNS), "content": contents.get(job.id), "events": events[job.id]}
        for job in jobs
    ]


async def _outbox_events(session: AsyncSession, account_id: str) -> list[dict[str, Any]]:
    query = select(OutboxEvent).where(OutboxEvent.account_id == account_id).order_by(OutboxEvent.id)
    columns = ("kind", "payload", "created_at", "attempts", "delivered_at")
    # The event's public id, the one its callback carried (docs/webhooks.md).
    return [
        {"id": event.public_id, **_row(event, columns)} for event in await session.scalars(query)
    ]


async def _pending_revocations(session: AsyncSession, account_id: str) -> list[dict[str, Any]]:
    query = select(PendingRevocation).where(PendingRevocation.account_id == account_id)
    columns = (  # never the sealed token nor its wrapped key
        "id",
        "mailbox_id",
        "provider",
        "attempts",
        "last_error",
        "created_at",
        "next_attempt_at",
        "give_up_at",
    )
    return [_row(revocation, columns) for revocation in await session.scalars(query)]


async def _support_grants(session: AsyncSession, account_id: str) -> list[dict[str, Any]]:
    query = (
        select(SupportGrant)
        .where(SupportGrant.account_id == account_id)
        .order_by(SupportGrant.created_at)
    )
    columns = ("id", "granted_by", "reason", "created_at", "expires_at", "revoked_at")
    return [_row(grant, columns) for grant in await session.scalars(query)]


async def _audit_events(session: AsyncSession, account_id: str) -> list[dict[str, Any]]:
    query = select(AuditEvent).where(AuditEvent.account_id == account_id).order_by(AuditEvent.id)
    columns = ("id", "at", "actor", "action", "target", "detail")
    return [_row(event, columns) for event in await session.scalars(query)]
