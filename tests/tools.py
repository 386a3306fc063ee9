"""External tools some tests need (promtool), found or visibly missing.

A missing tool skips the test that needs it, or fails it when tools are required: CI sets
``MAILBOX_WORKER_TEST_REQUIRE_TOOLS=1`` (``.ci/run``), and a run that requires PostgreSQL
(``MAILBOX_WORKER_TEST_REQUIRE_POSTGRES=1``) requires them too, as it does PgBouncer.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import REQUIRE_POSTGRES

REQUIRE_TOOLS = REQUIRE_POSTGRES or os.environ.get("MAILBOX_WORKER_TEST_REQUIRE_TOOLS") == "1"


def require_tool(name: str, package: str) -> str:
    """The path of executable ``name``; skips (fails when tools are required) without it."""
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} is not installed (apt-get install {package}; .ci/run does)"
    if REQUIRE_TOOLS:
        pytest.fail(reason)
    pytest.skip(reason)


def promtool() -> str:
    """Prometheus's promtool (Debian's package ``prometheus``)."""
    return require_tool("promtool", "prometheus")
