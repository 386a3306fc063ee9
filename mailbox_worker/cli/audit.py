"""``mailbox-worker audit verify``: check the tamper-evident audit trail (docs/privacy.md PP-3).

It first seals the entries old enough to seal (``db/audit_chain.py``), then recomputes every
chain. Exit 0 with ``ok, N entries in M chains``; exit 1 (``REFUSED``) naming the first entry
whose link is broken.
"""

from __future__ import annotations

import argparse

from mailbox_worker.app import App
from mailbox_worker.cli.output import OK, REFUSED, emit_json, refuse
from mailbox_worker.db.audit_chain import describe

ACTIONS = ("verify",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("--json", action="store_true", help="answer in JSON")


async def run(app: App, args: argparse.Namespace) -> int:
    """Seal, then verify; returns the exit status (``cli/output.py``)."""
    sealed = await app.audit_chain.seal()
    verification = await app.audit_chain.verify()
    broken = verification.broken
    if args.json:
        emit_json(
            {
                "ok": verification.ok,
                "entries": verification.entries,
                "chains": verification.chains,
                "unsealed": verification.unsealed,
                "sealed_now": sealed,
                "broken": None
                if broken is None
                else {
                    "entry_id": broken.entry_id,
                    "account_id": broken.account_id,
                    "reason": broken.reason,
                },
            }
        )
        return OK if broken is None else REFUSED
    lines = describe(verification)
    if broken is not None:
        return refuse(lines[0].removeprefix("broken: ") + ": the audit trail was altered")
    for line in lines:
        print(line)
    return OK
