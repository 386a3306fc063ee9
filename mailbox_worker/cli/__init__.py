"""The one entry point: ``mailbox-worker serve | migrate | demo | sandbox | ...``.

A wrong setting ends the command with one line naming it (exit status 2). Operator commands
keep the exit statuses of ``cli/output.py``: 0 done, 1 no such object or not in a state the
command applies to, 2 a wrong argument or setting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from mailbox_worker import logs
from mailbox_worker.app import App
from mailbox_worker.cli import accounts as account_commands
from mailbox_worker.cli import audit as audit_commands
from mailbox_worker.cli import jobs as job_commands
from mailbox_worker.cli import settings_view
from mailbox_worker.cli import support as support_commands
from mailbox_worker.config import Settings, load_settings
from mailbox_worker.db.accounts import PERMISSIONS
from mailbox_worker.errors import ConfigError, MailboxWorkerError
from mailbox_worker.policy.origins import normalise_origin
from mailbox_worker.tokens.rotation import RotationStatus

Command = Callable[[argparse.Namespace, Settings], Awaitable[int]]


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        logs.configure(settings.logging.level, json_lines=settings.logging.json)
        status = asyncio.run(args.handler(args, settings))
    except ConfigError as error:
        print(f"mailbox-worker: configuration error: {error.message}", file=sys.stderr)
        raise SystemExit(2) from None
    except MailboxWorkerError as error:
        print(f"mailbox-worker: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        status = 130
    raise SystemExit(status)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailbox-worker", description=__doc__)
    parser.add_argument("--config", type=Path, default=None, help="TOML settings file")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, handler: Command, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    command("serve", _serve, "run the HTTP API and the worker (migrates an empty database)")
    command("migrate", _migrate, "apply database migrations")

    demo = command("demo", _demo, "run the self-contained demo against the sandbox, then exit")
    demo.add_argument("--keep", action="store_true", help="keep running and print the URLs")
    demo.add_argument("--invoices", type=int, default=8, help="how many invoices to enqueue")
    demo.add_argument("--data-dir", type=Path, default=None, help="where to keep demo files")

    sandbox = command("sandbox", _sandbox, "run the Microsoft identity + Graph simulator alone")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8443)
    sandbox.add_argument("--data-dir", type=Path, default=Path("var/sandbox"))

    accounts = command(
        "accounts",
        _accounts,
        "create or list accounts; show or change an account's origins; export, erase, pause "
        "or resume an account (docs/privacy.md PP-7)",
    )
    accounts.add_argument(
        "action", choices=["create", "list", "origins", *account_commands.ACTIONS]
    )
    accounts.add_argument("name", nargs="?", help="account name (create)")
    accounts.add_argument("--account", help="account id (origins, export, erase, pause, resume)")
    accounts.add_argument(
        "--add",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow return URLs on this origin, e.g. https://invoicing.example (origins)",
    )
    accounts.add_argument(
        "--remove", action="append", default=[], metavar="ORIGIN", help="withdraw an origin"
    )
    account_commands.add_arguments(accounts)

    keys = command(
        "keys",
        _keys,
        "API keys (create, revoke) and encryption keys (rotate, rewrap, retire, status)",
    )
    keys.add_argument(
        "action", choices=["create", "revoke", "rotate", "rewrap", "retire", "status"]
    )
    keys.add_argument("--account", help="account id (create)")
    keys.add_argument("--name", default="api", help="a label for the API key (create)")
    keys.add_argument(
        "--permissions",
        default=",".join(sorted(PERMISSIONS)),
        help="comma-separated, from: " + ", ".join(sorted(PERMISSIONS)),
    )
    keys.add_argument("--id", help="API key id (revoke) or encryption key id (retire)")

    jobs = command(
        "jobs",
        _jobs,
        "list, show and count jobs (metadata only; a job's content only under the account's "
        "support-access grant); resolve, retry or cancel one; audited as cli",
    )
    job_commands.add_arguments(jobs)

    config = command("config", _config, "check the settings, or show them with every secret masked")
    settings_view.add_arguments(config)

    audit = command(
        "audit",
        _audit,
        "verify the tamper-evident audit trail (hash chains, one an account)",
    )
    audit_commands.add_arguments(audit)

    mailboxes = command(
        "mailboxes",
        _mailboxes,
        "list or disconnect mailboxes; show one's details under the account's support-access "
        "grant (audited)",
    )
    mailboxes.add_argument("action", choices=["list", "show", "disconnect"])
    mailboxes.add_argument("--account", help="account id (list)")
    mailboxes.add_argument("--id", help="mailbox id (show, disconnect)")
    mailboxes.add_argument("--json", action="store_true", help="answer in JSON (show)")
    return parser


@contextlib.asynccontextmanager
async def _app(settings: Settings, *, migrate: bool = True) -> AsyncIterator[App]:
    app = App.build(settings)
    try:
        if migrate:
            await app.migrate()
        yield app
    finally:
        await app.close()


async def _serve(args: argparse.Namespace, settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with _app(settings) as app:
        await app.serve(stop)
    return 0


async def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    async with _app(settings):
        print("database is at the newest migration")
    return 0


async def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from mailbox_worker.demo import run_demo

    return await run_demo(keep=args.keep, invoices=args.invoices, data_dir=args.data_dir)


async def _sandbox(args: argparse.Namespace, settings: Settings) -> int:
    from mailbox_worker.sandbox import serve

    await serve(args.host, args.port, args.data_dir)
    return 0


async def _accounts(args: argparse.Namespace, settings: Settings) -> int:
    if args.action in account_commands.ACTIONS:
        refused = account_commands.check_arguments(args)
        if refused is not None:
            return refused
        async with _app(settings) as app:
            return await account_commands.run(app, args)
    async with _app(settings) as app:
        if args.action == "create":
            if not args.name:
                raise ConfigError("name", "accounts create needs a name")
            account = await app.accounts.create_account(args.name)
            print(account.id)
        elif args.action == "origins":
            return await _origins(app, args)
        else:
            for account in await app.accounts.list_accounts():
                print(f"{account.id}\t{account.name}\t{account.created_at:%Y-%m-%d}")
    return 0


async def _origins(app: App, args: argparse.Namespace) -> int:
    """Print the account's return origins, after adding and removing the given ones."""
    if not args.account:
        raise ConfigError("--account", "accounts origins needs --account")
    if args.add or args.remove:
        try:
            removed = {_normalised(origin) for origin in args.remove}
            current = await app.accounts.return_origins(args.account)
            wanted = [origin for origin in current if origin not in removed] + args.add
            await app.accounts.set_return_origins(args.account, wanted, "cli")
        except (ValueError, LookupError) as error:
            print(f"mailbox-worker: {error}", file=sys.stderr)
            return 2
    elif await app.accounts.get_account(args.account) is None:
        print(f"mailbox-worker: no account {args.account}", file=sys.stderr)
        return 2
    for origin in await app.accounts.return_origins(args.account):
        print(origin)
    return 0


def _normalised(origin: str) -> str:
    try:
        return normalise_origin(origin)
    except ValueError as error:
        raise ValueError(f"the origin {origin!r} {error}") from None


async def _audit(args: argparse.Namespace, settings: Settings) -> int:
    async with _app(settings) as app:
        return await audit_commands.run(app, args)


async def _keys(args: argparse.Namespace, settings: Settings) -> int:
    async with _app(settings) as app:
        if args.action == "create":
            if not args.account:
                raise ConfigError("--account", "keys create needs --account")
            permissions = frozenset(p.strip() for p in args.permissions.split(",") if p.strip())
            try:
                issued = await app.accounts.create_api_key(args.account, args.name, permissions)
            except (ValueError, LookupError) as error:
                print(f"mailbox-worker: {error}", file=sys.stderr)
                return 2
            print(issued.secret)
            print(f"(key id {issued.key_id}; shown once, store it now)", file=sys.stderr)
        elif args.action == "revoke":
            done = await app.accounts.revoke_api_key(args.id or "")
            print("revoked" if done else "no such active key")
            return 0 if done else 1
        elif args.action == "rotate":
            new_key, report = await app.key_rotation.rotate_now()
            print(f"active key {new_key.key_id}; re-wrapped {report.rewrapped} data keys")
        elif args.action == "rewrap":
            report = await app.key_rotation.rewrap_now()
            active = (await asyncio.to_thread(app.keys.active_key)).key_id
            print(f"active key {active}; re-wrapped {report.rewrapped} data keys")
        elif args.action == "retire":
            return await _retire_key(app, args.id or "")
        else:
            _print_key_status(await app.key_rotation.status(), datetime.now(UTC))
    return 0


async def _retire_key(app: App, key_id: str) -> int:
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
        print(f"key {key_id} still wraps {in_use} data keys; run rotate first")
        return 1
    print(f"retired {key_id}")
    return 0


def _print_key_status(status: RotationStatus, now: datetime) -> None:
    """One tab-separated row per key under a header, then the schedule."""
    print("KEY\tSTATE\tCREATED\tSUPERSEDED\tDATA KEYS\tRETIRABLE FROM")
    for key in status.keys:
        state = "active" if key.active else "superseded" if key.in_store else "MISSING"
        retire = _when(key.retire_at)
        if key.retire_at is not None and key.data_keys:
            retire += " (after re-wrap)"
        times = (_when(key.created_at), _when(key.superseded_at))
        print(f"{key.key_id}\t{state}\t{times[0]}\t{times[1]}\t{key.data_keys}\t{retire}")
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


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _jobs(args: argparse.Namespace, settings: Settings) -> int:
    refused = job_commands.check_arguments(args)
    if refused is not None:
        return refused
    async with _app(settings) as app:
        return await job_commands.run(app, args)


async def _config(args: argparse.Namespace, settings: Settings) -> int:
    return settings_view.run(settings, args)


async def _mailboxes(args: argparse.Namespace, settings: Settings) -> int:
    async with _app(settings) as app:
        if args.action == "list":
            # Metadata only: the address is a detail, shown by ``show`` under a grant (PP-3).
            for mailbox in await app.mailboxes.list(args.account or ""):
                print(f"{mailbox.id}\t{mailbox.provider}\t{mailbox.state}")
            return 0
        if args.action == "show":
            return await support_commands.show_mailbox(app, args)
        found = await app.mailboxes.get(args.id or "")
        if found is None:
            print("no such mailbox", file=sys.stderr)
            return 1
        await app.mailbox_service.disconnect_mailbox(found, actor="cli")
        print(f"{found.id} disconnected")
    return 0


if __name__ == "__main__":  # pragma: no cover
    main()
