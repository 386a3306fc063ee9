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
