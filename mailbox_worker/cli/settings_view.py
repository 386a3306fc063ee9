"""``mailbox-worker config check | show``: whether the settings load, and what they are.

``show`` prints the effective settings (defaults, then the TOML file, then the environment)
with every secret masked: fields declared ``repr=False`` (client secrets, the callback secret,
keys from the environment) and the password of the database URL. Nothing masked is printed,
not even its length.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mailbox_worker.cli.output import OK, emit_json
from mailbox_worker.config import Settings

MASK = "********"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("check", "show"))
    parser.add_argument("--json", action="store_true", help="answer in JSON")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """``check``: the settings loaded (a wrong one stopped the command before, exit 2);
    ``show``: print them, secrets masked."""
    if args.action == "check":
        if args.json:
            emit_json({"valid": True})
        else:
            print("configuration is valid")
        return OK
    shown = masked(settings)
    if args.json:
        emit_json(shown)
        return OK
    for section, values in shown.items():
        print(f"[{section}]")
        for name, value in values.items():
            print(f"{name} = {value!r}")
        print()
    return OK


def masked(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every section's settings, as plain values, with secrets replaced by ``MASK``."""
    sections: dict[str, dict[str, Any]] = {}
    for section in dataclasses.fields(settings):
        values = getattr(settings, section.name)
        shown: dict[str, Any] = {}
        for field in dataclasses.fields(values):
            value = getattr(values, field.name)
            if not field.repr:
                value = MASK if value else ""
            elif isinstance(value, tuple | frozenset | set):
                value = sorted(value) if isinstance(value, frozenset | set) else list(value)
            shown[field.name] = value
        sections[section.name] = shown
    if "url" in sections.get("database", {}):
        sections["database"]["url"] = _without_password(str(sections["database"]["url"]))
    return sections


def _without_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return MASK  # not a URL SQLAlchemy reads: show nothing of it
