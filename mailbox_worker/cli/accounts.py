"""``mailbox-worker accounts``: create and list accounts, show or change an account's return
origins, and an account's data rights (docs/privacy.md PP-7) for an operator answering a
request (``export|erase|pause|resume --account ID``). Changes are audited as ``cli``.

``export`` prints the whole document as JSON on standard output (it carries the account's
message content: redirect it to a file only the requester will get). ``erase`` revokes and
wipes every mailbox and deletes every row of the account but the erasure's audit record; it
asks for ``--yes``. ``pause`` and ``resume`` stop and restart the claiming of its jobs.
"""

from __future__ import annotations

import argparse
from datetime import UTC

from mailbox_worker.app import App
from mailbox_worker.cli.output import OK, REFUSED, USAGE, emit_json, emit_rows, refuse
from mailbox_worker.errors import NotFound
from mailbox_worker.mailboxes.account_rights import ErasureReport, PauseView
from mailbox_worker.policy.origins import normalise_origin

RIGHTS = ("export", "erase", "pause", "resume")
ACTIONS = ("create", "list", "origins", *RIGHTS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("name", nargs="?", help="account name (create)")
    parser.add_argument("--account", help="account id (origins, export, erase, pause, resume)")
    parser.add_argument(
        "--add",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow return URLs on this origin, e.g. https://invoicing.example (origins)",
    )
    parser.add_argument(
        "--remove", action="append", default=[], metavar="ORIGIN", help="withdraw an origin"
    )
    parser.add_argument(
        "--yes", action="store_true", help="erase: yes, erase everything (required)"
    )
    parser.add_argument(
        "--json", action="store_true", help="answer in JSON (export always answers in JSON)"
    )


def check_arguments(args: argparse.Namespace) -> int | None:
    """A refusal that needs no database (a missing name or ``--account``; ``erase`` without
    ``--yes``), else None."""
    if args.action == "create" and not (args.name or "").strip():
        return refuse("accounts create needs a name", USAGE)
    if args.action in ("create", "list"):
        return None
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
    if args.action == "create":
        account = await app.accounts.create_account(args.name.strip())
        if args.json:
            emit_json({"id": account.id, "name": account.name})
        else:
            print(account.id)
        return OK
    if args.action == "list":
        rows = [
            {
                "id": account.id,
                "name": account.name,
                "created_at": account.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            for account in await app.accounts.list_accounts()
        ]
        emit_rows(rows, ("id", "name", "created_at"), args.json)
        return OK
    if args.action == "origins":
        return await _origins(app, args)
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


async def _origins(app: App, args: argparse.Namespace) -> int:
    """Print the account's return origins, after adding and removing the given ones: 2
    (``USAGE``) for a value that is not an origin, 1 (``REFUSED``) for an unknown account."""
    if args.add or args.remove:
        try:
            removed = {_normalised(origin) for origin in args.remove}
            current = await app.accounts.return_origins(args.account)
            wanted = [origin for origin in current if origin not in removed] + args.add
            await app.accounts.set_return_origins(args.account, wanted, "cli")
        except ValueError as error:
            return refuse(str(error), USAGE)
        except LookupError as error:
            return refuse(str(error), REFUSED)
    elif await app.accounts.get_account(args.account) is None:
        return refuse(f"no account {args.account}")
    origins = await app.accounts.return_origins(args.account)
    if args.json:
        emit_json({"account_id": args.account, "return_origins": origins})
    else:
        for origin in origins:
            print(origin)
    return OK


def _normalised(origin: str) -> str:
    try:
        return normalise_origin(origin)
    except ValueError as error:
        raise ValueError(f"the origin {origin!r} {error}") from None


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
