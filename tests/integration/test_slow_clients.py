"""Slow, malformed and surplus clients against the guarded server (``api/server.py``).

A request head must arrive within ``header_timeout`` (from the connection's opening, then from
each further request's first byte), a body within ``body_timeout``; beyond
``max_connections`` a connection is answered 503 and closed; what aiohttp's parser refuses is
answered JSON that quotes nothing of the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailbox_worker.accounts import Principal
from mailbox_worker.api.server import ServerLimits
from tests.integration.api_harness import RunningApi, running_api
from tests.raw_http import (
    DEADLINE,
    connection,
    get,
    healthz_status,
    parse,
    post_head,
    read_answer,
    read_to_end,
    trickle,
)

HEADER_TIMEOUT = 0.5
SECRET_CODE = "SECRETCODE0123456789"
SECRET_HEADER = "SECRETHEADER987654321"


@contextlib.asynccontextmanager
async def api(
    tmp_path: Path, *, max_connections: int = 512, body_timeout: float = 60.0
) -> AsyncIterator[tuple[RunningApi, int]]:
    limits = ServerLimits(header_timeout=HEADER_TIMEOUT, max_connections=max_connections)
    async with running_api(tmp_path, limits=limits, body_timeout=body_timeout) as running:
        yield running, int(running.base_url.rsplit(":", 1)[1])


# -- the head deadline --------------------------------------------------------------------


async def test_a_head_that_does_not_arrive_in_time_is_answered_408_and_closed(
    tmp_path: Path,
) -> None:
    async with api(tmp_path) as (_, port), connection(port) as (reader, writer):
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Note: {SECRET_HEADER}".encode())
        answer = parse(await read_to_end(reader))
    assert (answer.status, answer.error_code) == (408, "request_timeout")
    assert answer.headers["connection"] == "close"
    assert SECRET_HEADER.encode() not in answer.body


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer(
    tmp_path: Path,
) -> None:
    async with api(tmp_path) as (_, port), connection(port) as (reader, _):
        assert await read_to_end(reader) == b""


async def test_trickling_connections_are_closed_while_the_api_answers(tmp_path: Path) -> None:
    async with api(tmp_path) as (running, port):
        trickling = [asyncio.create_task(trickle(port)) for _ in range(100)]
        while not all(task.done() for task in trickling):
            answer = await running.call("GET", "/healthz")
            assert answer.status == 200
            await asyncio.wait(trickling, timeout=0.1)
        outcomes = [task.result() for task in trickling]
    assert set(outcomes) <= {"answered 408", "reset"}, outcomes
    assert outcomes.count("answered 408") > 0


async def test_the_head_deadline_runs_only_while_a_head_is_due(tmp_path: Path) -> None:
    async with api(tmp_path) as (_, port), connection(port) as (reader, writer):
        writer.write(get("/healthz"))
        assert (await read_answer(reader)).status == 200
        await asyncio.sleep(HEADER_TIMEOUT * 3)  # idle between requests: keep-alive's time
        writer.write(get("/healthz"))
        assert (await read_answer(reader)).status == 200
        writer.write(b"GET /healthz HTTP/1.1\r\n")  # the next head starts, and stalls
        answer = parse(await read_to_end(reader))
    assert (answer.status, answer.error_code) == (408, "request_timeout")


# -- the body deadline --------------------------------------------------------------------


async def test_a_body_that_does_not_arrive_in_time_is_answered_408(tmp_path: Path) -> None:
    async with api(tmp_path, body_timeout=HEADER_TIMEOUT) as (running, port):
        _, key = await running.account_with_key()
        async with connection(port) as (reader, writer):
            writer.write(post_head("/v1/jobs", key, length=500) + b'{"mailbox_id": ')
            answer = await read_answer(reader)
    assert (answer.status, answer.error_code) == (408, "request_timeout")
    assert answer.headers["connection"] == "close"
    assert b"mailbox_id" not in answer.body


async def test_a_client_hanging_up_mid_body_is_logged_at_info_and_counted_499(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    labels = {"method": "POST", "route": "/v1/jobs", "status": "499"}
    with caplog.at_level(logging.INFO):
        async with api(tmp_path) as (running, port):
            _, key = await running.account_with_key()
            reading = note_authentication(running, monkeypatch)
            async with connection(port) as (_, writer):
                writer.write(post_head("/v1/jobs", key, length=500) + b'{"mailbox_id": ')
                async with asyncio.timeout(DEADLINE):
                    await reading.wait()
            async with asyncio.timeout(DEADLINE):
                while (
                    running.registry.get_sample_value("mailbox_worker_http_requests_total", labels)
                    != 1
                ):
                    await asyncio.sleep(0.02)
    assert "client closed the connection during POST /v1/jobs" in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def note_authentication(running: RunningApi, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set once a handler authenticated; it then reads the body without yielding before."""
    authenticated = asyncio.Event()
    original = running.app.account_service.authenticate

    async def authenticate(presented: str) -> Principal | None:
        principal = await original(presented)
        authenticated.set()
        return principal

    monkeypatch.setattr(running.app.account_service, "authenticate", authenticate)
    return authenticated


# -- the connection limit -----------------------------------------------------------------


async def test_connections_over_the_limit_are_answered_503_and_closed(tmp_path: Path) -> None:
    async with api(tmp_path, max_connections=3) as (_, port):
        async with contextlib.AsyncExitStack() as held:
            for _ in range(3):  # admitted: each answered once, then idle on keep-alive
                reader, writer = await held.enter_async_context(connection(port))
                writer.write(get("/healthz"))
                assert (await read_answer(reader)).status == 200
            async with connection(port) as (reader, _):
                refused = parse(await read_to_end(reader))
        assert (refused.status, refused.error_code) == (503, "too_many_connections")
        assert refused.headers["retry-after"] == "1"
        async with asyncio.timeout(DEADLINE):  # the held connections are gone: room again
            while (answer := await healthz_status(port)) != 200:
                await asyncio.sleep(0.02)
    assert answer == 200


# -- what aiohttp's parser refuses --------------------------------------------------------

CALLBACK = f"/oauth/callback?code={SECRET_CODE}&state=s"


@pytest.mark.parametrize(
    ("head", "status", "code"),
    [
        (
            get(CALLBACK + "&pad=" + "x" * 9000),
            414,
            "request_line_too_long",
        ),
        (
            get(CALLBACK, f"X-Note: {SECRET_HEADER}" + "y" * 9000),
            431,
            "request_header_too_large",
        ),
        (
            get(CALLBACK, *(f"X-Header-{number}: {SECRET_HEADER}" for number in range(200))),
            431,
            "request_header_too_large",
        ),
        (
            get(CALLBACK, f"{SECRET_HEADER} without a colon"),
            400,
            "malformed_request",
        ),
        (
            f"G\x01T {CALLBACK} HTTP/1.1\r\n\r\n".encode(),
            400,
            "malformed_request",
        ),
    ],
    ids=["long request line", "long header", "too many headers", "bad header", "bad method"],
)
async def test_a_request_aiohttp_cannot_parse_is_answered_json_quoting_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, head: bytes, status: int, code: str
) -> None:
    with caplog.at_level(logging.DEBUG):
        async with api(tmp_path) as (_, port), connection(port) as (reader, writer):
            writer.write(head)
            answer = parse(await read_to_end(reader))
    assert (answer.status, answer.error_code) == (status, code)
    assert answer.headers["content-type"].startswith("application/json")
    assert set(answer.json()["error"]) == {"code", "message", "request_id"}
    for quoted in (SECRET_CODE, SECRET_HEADER, "oauth", "xxxx", "yyyy"):
        assert quoted.encode() not in answer.body
    for secret in (SECRET_CODE, SECRET_HEADER):
        assert secret not in caplog.text
