"""``mailbox-worker accounts export|erase|pause|resume --account ID``: an account's data
rights (docs/privacy.md PP-7), for an operator answering a request. Audited as ``cli``.

``export`` prints the whole document as JSON on standard output (it carries the account's
message content: redirect it to a file only the requester will get). ``erase`` revokes and
wipes every mailbox and deletes every row of the account but the erasure's audit record; it
asks for ``--yes``. ``pause`` and ``resume`` stop and restart the claiming of its jobs.
"""

from __future__ import annotations

import argparse

from mailbox_worker.app import App
from mailbox_worker.cli.output import OK, USAGE, emit_json, refuse
from mailbox_worker.errors import NotFound
from mailbox_worker.mailboxes.account_rights import ErasureReport, PauseView

ACTIONS = ("export", "erase", "pause", "resume")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options the data-rights actions add to ``accounts``."""
    parser.add_argument(
        "--yes", action="store_true", help="erase: yes, erase everything (required)"
    )
    parser.add_argument("--json", action="store_true", help="answer in JSON (erase, pause, resume)")


def check_arguments(args: argparse.Namespace) -> int | None:
    """A refusal that needs no database (no ``--account``; ``erase`` without ``--yes``)."""
    if not args.account:
        return refuse(f"accounts {args.action} needs --account", USAGE)
    if args.action == "erase" and not args.yes:
        return refuse(
            "accounts erase needs --yes: it revokes every mailbox and deletes everything held "
            "about the account, for good",
            USAGE,
        )
    return None


async def run(app: App, args: argparse.Namespace) -> int:
    """Carry out ``args.action``; 1 (``REFUSED``) for an unknown account."""
    rights = app.account_rights
    try:
        if args.action == "export":
            emit_json(await rights.export(args.account))
        elif args.action == "erase":
            _print_erasure(await rights.erase(args.account, "cli"), args.json)
        elif args.action == "pause":
            _print_pause(await rights.pause(args.account, "cli"), args.json)
        else:
            _print_pause(await rights.resume(args.account, "cli"), args.json)
    except NotFound:
        return refuse(f"no account {args.account}")
    return OK


def _print_pause(view: PauseView, as_json: bool) -> None:
    paused_at = view.paused_at.isoformat() if view.paused_at else None
    if as_json:
        emit_json({"account_id": view.account_id, "paused": view.paused, "paused_at": paused_at})
    else:
        print(f"{view.account_id} {'paused since ' + str(paused_at) if view.paused else 'active'}")


def _print_erasure(report: ErasureReport, as_json: bool) -> None:
    if as_json:
        emit_json(
            {
                "account_id": report.account_id,
                "mailboxes_disconnected": report.mailboxes_disconnected,
                "deleted": report.deleted,
                "revocations_pending": report.revocations_pending,
                "scrubbed": report.scrubbed,
            }
        )
        return
    print(f"{report.account_id} erased; {report.mailboxes_disconnected} mailboxes disconnected")
    for table, count in sorted(report.deleted.items()):
        print(f"{table}\t{count}")
    if report.revocations_pending:
        print(f"{report.revocations_pending} provider revocations wait to be retried")
    if not report.scrubbed:
        print("the storage scrub is pending; the daemon retries it (docs/erasure.md)")
