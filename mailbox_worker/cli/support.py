"""What an operator may see only under the customer's support-access grant (docs/privacy.md
PP-3, LU-5): a job's content (``jobs show --content``) and a mailbox's details (``mailboxes
show``: address, granted scopes, pinned identity).

Without an active grant for the job's or mailbox's account, ``jobs show --content`` refuses
(exit 1, ``REFUSED``) and ``mailboxes show`` shows its metadata only. Under one, the access is
audited first (``support.access``, actor ``cli``, the job or mailbox as subject) and then
shown.
"""

from __future__ import annotations

from typing import Any

from mailbox_worker.app import App
from mailbox_worker.cli.output import OK, emit_json, refuse
from mailbox_worker.db.models import Mailbox

ACTOR = "cli"


def no_grant_note(kind: str, subject: str, account_id: str) -> str:
    """Why only metadata is shown, and how the customer can change that."""
    return (
        f"{kind} {subject} belongs to account {account_id}, which has granted no active "
        "support access: only metadata can be shown (the account's admin grants access on "
        "the admin page, /admin, or with POST /v1/account/support-access)"
    )


async def show_job_content(app: App, job_id: str) -> int:
    """Print a job's message content under an active grant, audited; else refuse."""
    job = await app.jobs.get(job_id)
    if job is None:
        return refuse(f"no job {job_id}")
    grant = await app.support_grants.record_access(job.account_id, ACTOR, job.id, "job_content")
    if grant is None:
        return refuse(no_grant_note("job", job.id, job.account_id))
    payload = await app.jobs.payload(job.id)
    document: dict[str, Any] = {
        "id": job.id,
        "account_id": job.account_id,
        "support_grant": grant.id,
        "content": payload,
    }
    if payload is None:
        document["content_note"] = "purged (docs/retention.md)"
    emit_json(document)  # with or without --json: the content is structured
    return OK


async def mailbox_details(app: App, mailbox: Mailbox) -> dict[str, Any] | None:
    """A mailbox's details (address, granted scopes, pinned identity) under an active grant
    for its account, the access audited first; None, and nothing audited, without one."""
    grant = await app.support_grants.record_access(
        mailbox.account_id, ACTOR, mailbox.id, "mailbox_details"
    )
    if grant is None:
        return None
    return {
        "address": mailbox.address,
        "granted_scopes": sorted(mailbox.granted_scopes),
        "identity_tenant": mailbox.identity_tenant,
        "identity_subject": mailbox.identity_subject,
        "support_grant": grant.id,
    }
