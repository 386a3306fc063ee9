"""``mailbox-worker mailboxes list | show | disconnect``: the operator's view of mailboxes.

``list`` and ``show`` give metadata (docs/privacy.md PP-3): state and its reason code,
provider, capabilities, sending limits, pause, jobs by state, the last job error code, and
when it was created and last changed; never an address, a scope, an identity or a token.
``show`` adds the details (address, granted scopes, pinned identity) only under the
account's active support-access grant, and audits that access (``cli/support.py``); without
one it says so on standard error and still answers (exit 0). ``disconnect`` revokes and
erases the mailbox's tokens and cancels its pending jobs, audited as ``cli``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from mailbox_worker.app import App
from mailbox_worker.cli.output import OK, USAGE, emit_json, emit_rows, refuse
from mailbox_worker.cli.support import mailbox_details, no_grant_note
from mailbox_worker.db.mailbox_activity import MailboxActivityStore
from mailbox_worker.db.mailboxes import LIMIT_NAMES
from mailbox_worker.db.models import Mailbox

ACTIONS = ("list", "show", "disconnect")
LIST_COLUMNS = ("id", "account_id", "provider", "state", "state_reason", "updated_at")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("--account", help="account id (list; required)")
    parser.add_argument("--id", help="mailbox id (show, disconnect)")
    parser.add_argument("--json", action="store_true", help="answer in JSON")


def check_arguments(args: argparse.Namespace) -> int | None:
    """A refusal that needs no database (a missing ``--account`` or ``--id``), else None."""
    if args.action == "list" and not args.account:
        return refuse("mailboxes list needs --account", USAGE)
    if args.action != "list" and not args.id:
        return refuse(f"mailboxes {args.action} needs --id", USAGE)
    return None


async def run(app: App, args: argparse.Namespace) -> int:
    """Carry out ``args.action``; returns the exit status (``cli/output.py``)."""
    if args.action == "list":
        mailboxes = await app.mailboxes.list(args.account)
        emit_rows([_row(mailbox) for mailbox in mailboxes], LIST_COLUMNS, args.json)
        return OK
    mailbox = await app.mailboxes.get(args.id)
    if mailbox is None:
        return refuse(f"no mailbox {args.id}")
    if args.action == "show":
        return await _show(app, mailbox, args.json)
    await app.mailbox_service.disconnect_mailbox(mailbox, actor="cli")
    if args.json:
        emit_json({"id": mailbox.id, "state": "disconnected"})
    else:
        print(f"{mailbox.id} disconnected")
    return OK


async def _show(app: App, mailbox: Mailbox, as_json: bool) -> int:
    activity = await MailboxActivityStore(app.sessions).activity(mailbox.id)
    document = _row(mailbox) | {
        "capabilities": sorted(mailbox.capabilities),
        "limits": {name: getattr(mailbox, name) for name in LIMIT_NAMES},
        "paused_until": _when(mailbox.paused_until),
        "pause_reason": mailbox.pause_reason,
        "jobs_by_state": activity.jobs_by_state,
        "last_error_code": activity.last_error_code,
        "last_error_at": _when(activity.last_error_at),
        "created_at": _when(mailbox.created_at),
        "details": await mailbox_details(app, mailbox),
    }
    if document["details"] is None:
        print(
            f"mailbox-worker: {no_grant_note('mailbox', mailbox.id, mailbox.account_id)}",
            file=sys.stderr,
        )
    if as_json:
        emit_json(document)
        return OK
    for name, value in document.items():
        if isinstance(value, dict):
            for key, item in value.items():
                print(f"{name}.{key}\t{_cell(item)}")
        elif name != "details":
            print(f"{name}\t{_cell(value)}")
    return OK


def _row(mailbox: Mailbox) -> dict[str, Any]:
    """A mailbox's metadata for a list: what an operator may see without a support grant."""
    return {
        "id": mailbox.id,
        "account_id": mailbox.account_id,
        "provider": mailbox.provider,
        "state": mailbox.state,
        "state_reason": mailbox.state_reason,
        "updated_at": _when(mailbox.updated_at),
    }


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(str(item) for item in value) or "-"
    return "-" if value is None or value == "" else str(value)


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
