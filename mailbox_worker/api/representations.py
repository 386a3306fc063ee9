"""What the API answers about jobs, mailboxes and accounts (the document's ``Job``,
``Mailbox`` and ``Account``).

Only metadata: never a token, a key, or the job's message (recipients, subject, bodies,
attachments), which the client already has. Timestamps are RFC 3339 UTC with ``Z``.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

from mailbox_worker.api.services import (
    AccountView,
    ErasureReport,
    JobEventView,
    JobView,
    MailboxView,
    PauseView,
    SupportGrantView,
)


def timestamp(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is dt.UTC:  # as the database's times are read (db/models.py UTCDateTime)
        return _utc_text(value)
    return _text(value)


def _text(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_utc_text = functools.lru_cache(maxsize=1024)(_text)
"""``_text`` remembered for times in UTC: the jobs of one batch share their times (created,
updated), and formatting them was 2 % of a batch's CPU (docs/performance.md "Eleventh pass").
Only for UTC: two equal times of another zone may differ in ``fold`` (a wall time that occurs
twice) and so in their text, which a cache keyed by equality would confuse."""


def job_location(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


def mailbox_location(mailbox_id: str) -> str:
    return f"/v1/mailboxes/{mailbox_id}"


def job_json(job: JobView) -> dict[str, Any]:
    """A job; with its history too when the view carries its events."""
    last_error = None
    if job.last_error_code is not None:
        last_error = {"code": job.last_error_code, "message": job.last_error_message or ""}
    answer: dict[str, Any] = {
        "id": job.id,
        "mailbox_id": job.mailbox_id,
        "mode": job.mode,
        "state": job.state,
        "reference": job.reference,
        "message_id": job.message_id,
        "attempts": job.attempts,
        "created_at": timestamp(job.created_at),
        "updated_at": timestamp(job.updated_at),
        "finished_at": timestamp(job.finished_at),
        "deadline": timestamp(job.deadline),
        "send_at": timestamp(job.send_at),
        "priority": job.priority,
        "last_error": last_error,
        "provider": {
            "message_id": job.provider_message_id,
            "draft_id": job.provider_draft_id,
            "web_link": job.web_link,
        },
    }
    if job.events is not None:
        answer["events"] = [event_json(event) for event in job.events]
    return answer


def event_json(event: JobEventView) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": timestamp(event.at),
        "kind": event.kind,
        "from_state": event.from_state,
        "to_state": event.to_state,
        "code": event.code,
        "provider_status": event.provider_status,
    }


def mailbox_json(mailbox: MailboxView) -> dict[str, Any]:
    return {
        "id": mailbox.id,
        "provider": mailbox.provider,
        "capabilities": list(mailbox.capabilities),
        "state": mailbox.state,
        "state_reason": mailbox.state_reason,
        "address": mailbox.address,
        "granted_scopes": list(mailbox.granted_scopes),
        "created_at": timestamp(mailbox.created_at),
        "updated_at": timestamp(mailbox.updated_at),
        "limits": {
            "max_concurrency": mailbox.limits.max_concurrency,
            "rate_per_minute": mailbox.limits.rate_per_minute,
            "daily_recipient_cap": mailbox.limits.daily_recipient_cap,
        },
        "paused_until": timestamp(mailbox.paused_until),
    }


def account_json(account: AccountView) -> dict[str, Any]:
    """The account's id, name, creation time and declared return origins (sorted)."""
    return {
        "id": account.id,
        "name": account.name,
        "created_at": timestamp(account.created_at),
        "return_origins": sorted(account.return_origins),
    }


def support_access_json(
    grant: SupportGrantView | None, *, revoked: SupportGrantView | None = None
) -> dict[str, Any]:
    """The active support-access grant or ``null`` (the document's ``SupportAccess``); after
    a revocation, ``revoked`` too."""
    document: dict[str, Any] = {"active": grant is not None, "grant": _grant_json(grant)}
    if revoked is not None:
        document["revoked"] = _grant_json(revoked)
    return document


def _grant_json(grant: SupportGrantView | None) -> dict[str, Any] | None:
    if grant is None:
        return None
    return {
        "id": grant.id,
        "granted_by": grant.granted_by,
        "reason": grant.reason,
        "created_at": timestamp(grant.created_at),
        "expires_at": timestamp(grant.expires_at),
        "revoked_at": timestamp(grant.revoked_at),
    }


def pause_json(view: PauseView) -> dict[str, Any]:
    """Whether the account's processing is paused, and since when (the document's
    ``AccountPause``)."""
    return {
        "account_id": view.account_id,
        "paused": view.paused,
        "paused_at": timestamp(view.paused_at),
    }


def erasure_json(report: ErasureReport) -> dict[str, Any]:
    """What an account's erasure did (the document's ``AccountErasure``): counts, no content."""
    return {
        "account_id": report.account_id,
        "mailboxes_disconnected": report.mailboxes_disconnected,
        "deleted": dict(report.deleted),
        "revocations_pending": report.revocations_pending,
        "scrubbed": report.scrubbed,
    }
