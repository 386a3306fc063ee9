"""The one entry point: ``mailbox-worker serve | migrate | demo | sandbox | ...``.

A wrong setting ends the command with one line naming it (exit status 2).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

from mailbox_worker import logs
from mailbox_worker.app import App
from mailbox_worker.config import Settings, load_settings
from mailbox_worker.db.accounts import PERMISSIONS
from mailbox_worker.errors import ConfigError, MailboxWorkerError
from mailbox_worker.policy.origins import normalise_origin

Command = Callable[[argparse.Namespace, Settings], Awaitable[int]]


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        logs.configure(settings.logging.level)
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
        "accounts", _accounts, "create or list accounts; show or change an account's origins"
    )
    accounts.add_argument("action", choices=["create", "list", "origins"])
    accounts.add_argument("name", nargs="?", help="account name (create)")
    accounts.add_argument("--account", help="account id (origins)")
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

    keys = command("keys", _keys, "API keys (create, revoke) and encryption keys (rotate, retire)")
    keys.add_argument("action", choices=["create", "revoke", "rotate", "retire", "status"])
    keys.add_argument("--account", help="account id (create)")
    keys.add_argument("--name", default="api", help="a label for the API key (create)")
    keys.add_argument(
        "--permissions",
        default=",".join(sorted(PERMISSIONS)),
        help="comma-separated, from: " + ", ".join(sorted(PERMISSIONS)),
    )
    keys.add_argument("--id", help="API key id (revoke) or encryption key id (retire)")

    mailboxes = command("mailboxes", _mailboxes, "list or disconnect mailboxes")
    mailboxes.add_argument("action", choices=["list", "disconnect"])
    mailboxes.add_argument("--account", help="account id (list)")
    mailboxes.add_argument("--id", help="mailbox id (disconnect)")
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
            new_key = await asyncio.to_thread(app.keys.add_key)
            report = await app.vault.rewrap_all()
            print(f"active key {new_key.key_id}; re-wrapped {report.rewrapped} data keys")
        elif args.action == "retire":
            usage = await app.vault.key_usage()
            if usage.get(args.id or "", 0):
                print(f"key {args.id} still wraps {usage[args.id]} data keys; run rotate first")
                return 1
            await asyncio.to_thread(app.keys.retire, args.id or "")
            print(f"retired {args.id}")
        else:
            for key_id, count in sorted((await app.vault.key_usage()).items()):
                print(f"{key_id}\t{count} data keys")
    return 0


async def _mailboxes(args: argparse.Namespace, settings: Settings) -> int:
    async with _app(settings) as app:
        if args.action == "list":
            for mailbox in await app.mailboxes.list(args.account or ""):
                print(
                    f"{mailbox.id}\t{mailbox.provider}\t{mailbox.state}\t{mailbox.address or '-'}"
                )
            return 0
        found = await app.mailboxes.get(args.id or "")
        if found is None:
            print("no such mailbox", file=sys.stderr)
            return 1
        await app.mailbox_service.disconnect_mailbox(found, actor="cli")
        print(f"{found.id} disconnected")
    return 0


if __name__ == "__main__":  # pragma: no cover
    main()
