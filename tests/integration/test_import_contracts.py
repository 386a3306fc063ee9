"""The import contracts in pyproject.toml can still fail.

A contract that no longer matches the code it guards passes whatever the code does. Each case
copies the package and pyproject.toml to a scratch folder, adds one import the design forbids,
and runs import-linter there: it must report that very import as a broken contract. The
unmodified copy must pass, so each failure is the probe's doing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

# (module that gains the import, the import line, the module it reaches)
PROBES = [
    ("mailbox_worker.policy.scopes", "from mailbox_worker import errors", "mailbox_worker.errors"),
    ("mailbox_worker.api.app", "import sqlalchemy", "sqlalchemy"),
    ("mailbox_worker.api.app", "from mailbox_worker.db import engine", "mailbox_worker.db.engine"),
    ("mailbox_worker.providers.base", "from mailbox_worker import config", "mailbox_worker.config"),
    ("mailbox_worker.providers.base", "import prometheus_client", "prometheus_client"),
    # import-linter names an outside package by its top level
    ("mailbox_worker.jobs.worker", "from aiohttp import web", "aiohttp"),
]


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(tree / "pyproject.toml")],
        cwd=tree,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the package and its contracts, without caches."""
    shutil.copytree(
        ROOT / "mailbox_worker",
        tmp_path / "mailbox_worker",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_contracts_hold_on_the_unmodified_package(tree: Path) -> None:
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("importer", "line", "imported"), PROBES)
def test_a_forbidden_import_breaks_a_contract(
    tree: Path, importer: str, line: str, imported: str
) -> None:
    module = tree / (importer.replace(".", "/") + ".py")
    module.write_text(module.read_text() + f"\n{line}  # the probe\n")
    result = lint(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout
    assert f"{importer} -> {imported}" in result.stdout
