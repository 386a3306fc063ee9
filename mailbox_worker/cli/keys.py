"""``mailbox-worker keys``: API keys (``create``, ``revoke``) and the encryption keys that wrap
every mailbox's data key (``rotate``, ``rewrap``, ``retire``, ``status``; docs/keys.md).

``create`` prints the new API key's secret once, on standard output (``--json``: with its id);
nothing else ever shows it again.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

from mailbox_worker.app import App
from mailbox_worker.cli.output import OK, REFUSED, USAGE, emit_json, refuse
from mailbox_worker.db.accounts import PERMISSIONS
from mailbox_worker.tokens.rotation import KeyState, RotationStatus

ACTIONS = ("create", "revoke", "rotate", "rewrap", "retire", "status")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("--account", help="account id (create)")
    parser.add_argument("--name", default="api", help="a label for the API key (create)")
    parser.add_argument(
        "--permissions",
        default=",".join(sorted(PERMISSIONS)),
        help="comma-separated, from: " + ", ".join(sorted(PERMISSIONS)),
    )
    parser.add_argument("--id", help="API key id (revoke) or encryption key id (retire)")
    parser.add_argument("--json", action="store_true", help="answer in JSON")


def check_arguments(args: argparse.Namespace) -> int | None:
    """A refusal that needs no database (a missing ``--account`` or ``--id``), else None."""
    if args.action == "create" and not args.account:
        return refuse("keys create needs --account", USAGE)
    if args.action in ("revoke", "retire") and not args.id:
        return refuse(f"keys {args.action} needs --id", USAGE)
    return None


async def run(app: App, args: argparse.Namespace) -> int:
    """Carry out ``args.action``; returns the exit status (``cli/output.py``)."""
    if args.action == "create":
        return await _create(app, args)
    if args.action == "revoke":
        if not await app.accounts.revoke_api_key(args.id):
            return refuse(f"no active API key {args.id}")
        _say(args.json, {"id": args.id, "revoked": True}, "revoked")
    elif args.action == "rotate":
        new_key, report = await app.key_rotation.rotate_now()
        _say_active(args.json, new_key.key_id, report.rewrapped)
    elif args.action == "rewrap":
        report = await app.key_rotation.rewrap_now()
        active = (await asyncio.to_thread(app.keys.active_key)).key_id
        _say_active(args.json, active, report.rewrapped)
    elif args.action == "retire":
        return await _retire(app, args.id, args.json)
    else:
        status = await app.key_rotation.status()
        if args.json:
            emit_json(_status_json(status))
        else:
            _print_status(status, datetime.now(UTC))
    return OK


async def _create(app: App, args: argparse.Namespace) -> int:
    permissions = frozenset(p.strip() for p in args.permissions.split(",") if p.strip())
    try:
        issued = await app.accounts.create_api_key(args.account, args.name, permissions)
    except ValueError as error:
        return refuse(str(error), USAGE)
    except LookupError as error:
        return refuse(str(error), REFUSED)
    if args.json:
        emit_json({"id": issued.key_id, "account_id": args.account, "secret": issued.secret})
    else:
        print(issued.secret)
    print(f"(key id {issued.key_id}; shown once, store it now)", file=sys.stderr)
    return OK


async def _retire(app: App, key_id: str, as_json: bool) -> int:
    status = await app.key_rotation.status()
    for state in status.keys:
        if state.key_id == key_id and state.retire_at and state.retire_at > datetime.now(UTC):
            print(
                f"warning: {key_id} was superseded less than keys.retire_grace_hours ago; a "
                "process that read it just before the rotation may still wrap a data key "
                "under it (docs/keys.md)",
                file=sys.stderr,
            )
    in_use = await app.key_rotation.retire_now(key_id)
    if in_use:
        return refuse(f"key {key_id} still wraps {in_use} data keys; run rotate first")
    _say(as_json, {"id": key_id, "retired": True}, f"retired {key_id}")
    return OK


def _say(as_json: bool, document: dict[str, Any], line: str) -> None:
    if as_json:
        emit_json(document)
    else:
        print(line)


def _say_active(as_json: bool, key_id: str, rewrapped: int) -> None:
    _say(
        as_json,
        {"active_key": key_id, "rewrapped": rewrapped},
        f"active key {key_id}; re-wrapped {rewrapped} data keys",
    )


def _status_json(status: RotationStatus) -> dict[str, Any]:
    return {
        "keys": [_key_json(key) for key in status.keys],
        "scheduled": status.scheduled,
        "next_rotation_at": _when(status.next_rotation_at),
    }


def _key_json(key: KeyState) -> dict[str, Any]:
    return {
        "id": key.key_id,
        "active": key.active,
        "in_store": key.in_store,
        "created_at": _when(key.created_at),
        "superseded_at": _when(key.superseded_at),
        "data_keys": key.data_keys,
        "retire_at": _when(key.retire_at),
    }


def _print_status(status: RotationStatus, now: datetime) -> None:
    """One tab-separated row per key under a header, then the schedule."""
    print("KEY\tSTATE\tCREATED\tSUPERSEDED\tDATA KEYS\tRETIRABLE FROM")
    for key in status.keys:
        state = "active" if key.active else "superseded" if key.in_store else "MISSING"
        retire = _when(key.retire_at) or "-"
        if key.retire_at is not None and key.data_keys:
            retire += " (after re-wrap)"
        created, superseded = _when(key.created_at) or "-", _when(key.superseded_at) or "-"
        print(f"{key.key_id}\t{state}\t{created}\t{superseded}\t{key.data_keys}\t{retire}")
    if not any(key.in_store for key in status.keys):
        print("next rotation: none yet (the first key is created on first use or by rotate)")
    elif not status.scheduled:
        print("next rotation: not scheduled (keys.rotate_every_days = 0 or keys.source = env)")
    elif status.next_rotation_at is None:
        print("next rotation: at the daemon's next check, once it records the key's age")
    elif status.next_rotation_at <= now:
        print("next rotation: due now (at the daemon's next hourly check)")
    else:
        print(f"next rotation: {_when(status.next_rotation_at)}")


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
