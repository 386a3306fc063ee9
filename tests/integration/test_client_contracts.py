"""The client's two import contracts in pyproject.toml can still fail.

As in ``test_import_contracts.py``: a copy of the package gains one import the contracts
forbid, and import-linter must name that very import as broken.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.test_import_contracts import ROOT, lint

PROBES = [
    # the client imports the daemon's exception tree
    ("mailbox_worker.client.errors", "from mailbox_worker import errors", "mailbox_worker.errors"),
    # the client needs a dependency besides aiohttp
    ("mailbox_worker.client.transport", "import sqlalchemy", "sqlalchemy"),
    # the daemon uses the client
    ("mailbox_worker.api.app", "from mailbox_worker import client", "mailbox_worker.client"),
    (
        "mailbox_worker.cli",
        "import mailbox_worker.client.webhooks",
        "mailbox_worker.client.webhooks",
    ),
]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "mailbox_worker",
        tmp_path / "mailbox_worker",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(("importer", "line", "imported"), PROBES)
def test_a_forbidden_client_import_breaks_a_contract(
    tree: Path, importer: str, line: str, imported: str
) -> None:
    path = tree / (importer.replace(".", "/") + ".py")
    if not path.exists():  # a package: its __init__
        path = tree / importer.replace(".", "/") / "__init__.py"
    path.write_text(path.read_text() + f"\n{line}  # the probe\n")
    result = lint(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout
    assert f"{importer} -> {imported}" in result.stdout


def test_the_demo_may_use_the_client(tree: Path) -> None:
    assert "from mailbox_worker.client import" in (tree / "mailbox_worker/demo.py").read_text()
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
