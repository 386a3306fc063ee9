"""Alembic's migrations of the schema (``versions/``, run by ``env.py``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

VERSIONS = Path(__file__).with_name("versions")


def load_version(filename: str) -> ModuleType:
    """The migration in ``versions/filename``, loaded from its file as Alembic loads it (the
    file's name starts with a digit: no import statement reaches it). For a migration that
    builds on an earlier one's text, and for the tests that pin that text."""
    path = VERSIONS / filename
    spec = importlib.util.spec_from_file_location(f"mailbox_worker_migration_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"no migration {filename}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lines_of(text: str, first: str, last: str) -> str:
    """The run of whole lines of ``text`` from the line ``first`` to the next line ``last``,
    both included (compared without their line ends): the part of an earlier migration's
    text that a later one replaces, taken from that text rather than written out again.
    Raises ``RuntimeError`` unless ``first`` is exactly one line of ``text`` and ``last``
    follows it, so a later migration cannot replace what its predecessor no longer holds."""
    rows = text.splitlines(keepends=True)
    starts = [number for number, row in enumerate(rows) if row.rstrip("\n") == first]
    if len(starts) != 1:
        raise RuntimeError(f"{first.strip()!r} is not one line of the text")
    for end in range(starts[0], len(rows)):
        if rows[end].rstrip("\n") == last:
            return "".join(rows[starts[0] : end + 1])
    raise RuntimeError(f"{last.strip()!r} does not follow {first.strip()!r}")
