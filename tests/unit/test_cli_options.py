"""Every operator command answers in JSON on request (``--json``, docs/operations.md); only the
long-running ones (the daemon, the demo, the sandbox) have no answer to give."""

from __future__ import annotations

import argparse

from mailbox_worker.cli import _parser

LONG_RUNNING = {"serve", "demo", "sandbox"}


def _commands() -> dict[str, argparse.ArgumentParser]:
    [subcommands] = [
        action for action in _parser()._actions if isinstance(action, argparse._SubParsersAction)
    ]
    return dict(subcommands.choices)


def test_every_operator_command_takes_json() -> None:
    commands = _commands()
    without = {
        name for name, parser in commands.items() if "--json" not in parser._option_string_actions
    }

    assert {"accounts", "keys", "mailboxes", "jobs", "config", "audit", "migrate"} <= set(commands)
    assert without == LONG_RUNNING
