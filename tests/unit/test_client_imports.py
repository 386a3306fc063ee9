"""The client needs aiohttp and the standard library only, and nothing else of the package.

import-linter's contract forbids the daemon's modules and the other runtime dependencies by
name; this reads every import statement of the client, so a new dependency is caught even
before anyone thinks to add it to that list.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import mailbox_worker.client

CLIENT = Path(mailbox_worker.client.__file__).parent


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            assert node.module is not None
            names.add(node.module)
    return names


def allowed(module: str) -> bool:
    top = module.split(".")[0]
    if top == "mailbox_worker":
        return module == "mailbox_worker.client" or module.startswith("mailbox_worker.client.")
    return top == "aiohttp" or top in sys.stdlib_module_names or top == "__future__"


def test_every_import_of_the_client_is_aiohttp_the_standard_library_or_itself() -> None:
    modules = sorted(CLIENT.glob("*.py"))
    assert len(modules) >= 5  # the package is where this test thinks
    found = {name for path in modules for name in imported_modules(path)}
    assert "aiohttp" in found  # the scan sees imports at all
    assert [name for name in sorted(found) if not allowed(name)] == []


def test_the_check_itself_refuses_the_daemon_and_other_dependencies() -> None:
    assert not allowed("mailbox_worker.errors")
    assert not allowed("mailbox_worker.clientele")
    assert not allowed("sqlalchemy.orm")
    assert allowed("mailbox_worker.client.models")
