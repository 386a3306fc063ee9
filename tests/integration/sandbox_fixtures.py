"""Fixtures for tests that talk to a running sandbox directly, as the providers' clients would.

Imported by ``tests/integration/conftest.py``: the sandbox's own tests (``sandbox/``) and the
daemon's integration tests use them alike.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import requests

from mailbox_worker.sandbox import Sandbox
from mailbox_worker.tokens.oauth_sessions import close_session, new_session


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    running = Sandbox(tmp_path / "sandbox")
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def http(sandbox: Sandbox) -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp client trusting the sandbox's CA."""
    context = ssl.create_default_context(cafile=str(sandbox.ca_path))
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context), trust_env=False
    ) as session:
        yield session


@pytest.fixture
def requests_session(sandbox: Sandbox) -> Iterator[requests.Session]:
    """A requests session (what msal and google-auth use) trusting the sandbox's CA."""
    session = new_session(str(sandbox.ca_path))
    try:
        yield session
    finally:
        close_session(session)
