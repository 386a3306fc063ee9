"""The one entry point: ``mailbox-worker serve | migrate | demo | sandbox | ...``.

A wrong setting ends the command with one line naming it (exit status 2). Operator commands
keep the exit statuses of ``cli/output.py``: 0 done, 1 no such object or not in a state the
command applies to, 2 a wrong argument or setting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

from mailbox_worker import logs
from mailbox_worker.app import App
from mailbox_worker.cli import accounts as account_commands
from mailbox_worker.cli import audit as audit_commands
from mailbox_worker.cli import jobs as job_commands
from mailbox_worker.cli import keys as key_commands
from mailbox_worker.cli import mailboxes as mailbox_commands
from mailbox_worker.cli import serve as serve_command
from mailbox_worker.cli import settings_view
from mailbox_worker.cli.allocator import tune_malloc
from mailbox_worker.cli.output import OK, emit_json
from mailbox_worker.config import Settings, load_settings
from mailbox_worker.errors import ConfigError, MailboxWorkerError

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

    serve = command(
        "serve",
        _serve,
        "run the HTTP API and the worker, or one of them, or N worker processes "
        "(migrates an empty database)",
    )
    serve_command.add_arguments(serve)
    migrate = command("migrate", _migrate, "apply database migrations")
    migrate.add_argument("--json", action="store_true", help="answer in JSON")

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
    account_commands.add_arguments(accounts)

    keys = command(
        "keys",
        _keys,
        "API keys (create, revoke) and encryption keys (rotate, rewrap, retire, status)",
    )
    key_commands.add_arguments(keys)

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
        "list, show or disconnect mailboxes (metadata only; a mailbox's address and identity "
        "only under the account's support-access grant, audited)",
    )
    mailbox_commands.add_arguments(mailboxes)
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
    serve_command.check_arguments(args, settings)
    # Before the app allocates: large invoices' buffers go back to the system when freed,
    # smaller ones' memory is kept for the next job.
    tune_malloc()
    async with _app(settings, migrate=False) as app:
        # A daemon may start before its database, or while it restarts: wait for it.
        await app.migrate(wait=serve_command.DATABASE_WAIT)
        return await serve_command.serve(args, settings, app)


async def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    async with _app(settings):
        if args.json:
            emit_json({"migrated": True})
        else:
            print("database is at the newest migration")
    return OK


async def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from mailbox_worker.demo import run_demo

    return await run_demo(keep=args.keep, invoices=args.invoices, data_dir=args.data_dir)


async def _sandbox(args: argparse.Namespace, settings: Settings) -> int:
    from mailbox_worker.sandbox import serve

    await serve(args.host, args.port, args.data_dir)
    return 0


async def _accounts(args: argparse.Namespace, settings: Settings) -> int:
    refused = account_commands.check_arguments(args)
    if refused is not None:
        return refused
    async with _app(settings) as app:
        return await account_commands.run(app, args)


async def _audit(args: argparse.Namespace, settings: Settings) -> int:
    async with _app(settings) as app:
        return await audit_commands.run(app, args)


async def _keys(args: argparse.Namespace, settings: Settings) -> int:
    refused = key_commands.check_arguments(args)
    if refused is not None:
        return refused
    async with _app(settings) as app:
        return await key_commands.run(app, args)


async def _jobs(args: argparse.Namespace, settings: Settings) -> int:
    refused = job_commands.check_arguments(args)
    if refused is not None:
        return refused
    async with _app(settings) as app:
        return await job_commands.run(app, args)


async def _config(args: argparse.Namespace, settings: Settings) -> int:
    return settings_view.run(settings, args)


async def _mailboxes(args: argparse.Namespace, settings: Settings) -> int:
    refused = mailbox_commands.check_arguments(args)
    if refused is not None:
        return refused
    async with _app(settings) as app:
        return await mailbox_commands.run(app, args)


if __name__ == "__main__":  # pragma: no cover
    main()
