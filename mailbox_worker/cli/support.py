"""What an operator may see only under the customer's support-access grant (docs/privacy.md
PP-3, LU-5): a job's content (``jobs show --content``) and a mailbox's details (``mailboxes
show``: address, granted scopes, pinned identity).

Without an active grant for the job's or mailbox's account the command refuses (exit 1,
``REFUSED``) and shows nothing beyond metadata. Under one, the access is audited first
(``support.access``, actor ``cli``, the job or mailbox as subject) and then shown.
"""

from __future__ import annotations

import argparse
from typing import Any

from mailbox_worker.app import App
from mailbox_worker.cli.output import OK, USAGE, emit_json, refuse

ACTOR = "cli"


def _no_grant(kind: str, subject: str, account_id: str) -> int:
    return refuse(
        f"{kind} {subject} belongs to account {account_id}, which has granted no active "
        "support access: only metadata can be shown (the account's admin grants access "
        "with POST /v1/account/support-access)"
    )


async def show_job_content(app: App, job_id: str) -> int:
    """Print a job's message content under an active grant, audited; else refuse."""
    job = await app.jobs.get(job_id)
    if job is None:
        return refuse(f"no job {job_id}")
    grant = await app.support_grants.record_access(job.account_id, ACTOR, job.id, "job_content")
    if grant is None:
        return _no_grant("job", job.id, job.account_id)
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


async def show_mailbox(app: App, args: argparse.Namespace) -> int:
    """Print a mailbox's address, scopes and identity under an active grant, audited."""
    if not args.id:
        return refuse("mailboxes show needs --id", USAGE)
    mailbox = await app.mailboxes.get(args.id)
    if mailbox is None:
        return refuse(f"no mailbox {args.id}")
    grant = await app.support_grants.record_access(
        mailbox.account_id, ACTOR, mailbox.id, "mailbox_details"
    )
    if grant is None:
        return _no_grant("mailbox", mailbox.id, mailbox.account_id)
    details = {
        "id": mailbox.id,
        "account_id": mailbox.account_id,
        "provider": mailbox.provider,
        "state": mailbox.state,
        "address": mailbox.address,
        "granted_scopes": sorted(mailbox.granted_scopes),
        "identity_tenant": mailbox.identity_tenant,
        "identity_subject": mailbox.identity_subject,
        "support_grant": grant.id,
    }
    if args.json:
        emit_json(details)
    else:
        for name, value in details.items():
            shown = " ".join(value) if isinstance(value, list) else value
            print(f"{name}\t{'-' if shown in (None, '') else shown}")
    return OK
