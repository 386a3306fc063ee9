"""The egress gate stops a request to a destination off the allow-list before a connection is
made, in both HTTP stacks the daemon uses, redirects included (docs/privacy.md PP-5)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mailbox_worker.errors import PolicyViolation
from mailbox_worker.policy.egress import EgressPolicy
from mailbox_worker.providers.egress_gate import RULE, EgressGate
from mailbox_worker.providers.transport import create_session
from mailbox_worker.tokens.oauth_sessions import close_session, new_session

TIMEOUT = aiohttp.ClientTimeout(total=10)


class Listener:
    """A TCP server that counts the connections made to it (and answers 204 to each)."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class Recorded:
    """A ``ViolationReporter`` that keeps what it was told."""

    def __init__(self) -> None:
        self.violations: list[tuple[str, str]] = []

    def policy_violation(self, rule: str, attempted: str) -> None:
        self.violations.append((rule, attempted))


@pytest.fixture
async def forbidden() -> AsyncIterator[tuple[Listener, str]]:
    listener = Listener()
    url = await listener.start()
    yield listener, url
    await listener.stop()


@pytest.fixture
async def allowed(forbidden: tuple[Listener, str]) -> AsyncIterator[str]:
    """A server on the allow-list whose ``/elsewhere`` redirects to the forbidden one."""
    _, elsewhere = forbidden

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{elsewhere}/landing?authtoken=secret")

    async def fine(request: web.Request) -> web.Response:
        return web.Response(text="fine")

    application = web.Application()
    application.router.add_get("/elsewhere", redirect)
    application.router.add_get("/fine", fine)
    server = TestServer(application, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


def gate_for(allowed: str, reporter: Recorded) -> EgressGate:
    return EgressGate(EgressPolicy.for_endpoints([allowed]), reporter)


async def test_an_aiohttp_session_reaches_allowed_hosts_only(
    allowed: str, forbidden: tuple[Listener, str]
) -> None:
    listener, elsewhere = forbidden
    reporter = Recorded()
    session = create_session(TIMEOUT, gate_for(allowed, reporter))
    try:
        async with session.get(f"{allowed}/fine") as answer:
            assert await answer.text() == "fine"
        with pytest.raises(PolicyViolation) as refused:
            await session.post(f"{elsewhere}/upload?authtoken=secret", data=b"invoice")
    finally:
        await session.close()
    assert refused.value.code == "egress_not_allowed"
    assert listener.connections == 0
    assert reporter.violations == [(RULE, f"POST {elsewhere}")]


async def test_an_aiohttp_redirect_off_the_list_is_not_followed(
    allowed: str, forbidden: tuple[Listener, str]
) -> None:
    listener, elsewhere = forbidden
    reporter = Recorded()
    session = create_session(TIMEOUT, gate_for(allowed, reporter))
    try:
        with pytest.raises(PolicyViolation):
            await session.get(f"{allowed}/elsewhere")
    finally:
        await session.close()
    assert listener.connections == 0
    assert reporter.violations == [(RULE, f"GET {elsewhere}")]


async def test_a_requests_session_reaches_allowed_hosts_only(
    allowed: str, forbidden: tuple[Listener, str]
) -> None:
    listener, elsewhere = forbidden
    reporter = Recorded()
    session = new_session(None, gate_for(allowed, reporter))
    try:
        answer = await asyncio.to_thread(session.get, f"{allowed}/fine", timeout=10)
        assert answer.text == "fine"
        with pytest.raises(PolicyViolation):
            await asyncio.to_thread(session.get, f"{elsewhere}/token", timeout=10)
        with pytest.raises(PolicyViolation):  # requests follows redirects through send()
            await asyncio.to_thread(session.get, f"{allowed}/elsewhere", timeout=10)
    finally:
        close_session(session)
    assert listener.connections == 0
    assert reporter.violations == [(RULE, f"GET {elsewhere}")] * 2


async def test_without_a_policy_nothing_is_refused(forbidden: tuple[Listener, str]) -> None:
    listener, elsewhere = forbidden
    session = create_session(TIMEOUT, EgressGate())
    try:
        async with session.get(f"{elsewhere}/x") as answer:
            assert answer.status == 204
    finally:
        await session.close()
    assert listener.connections == 1
