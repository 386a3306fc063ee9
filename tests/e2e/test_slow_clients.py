"""Slow, malformed and surplus clients against the daemon as a real process.

300 connections trickling their request heads are closed within ``server.header_timeout``
while ``/healthz`` keeps answering; beyond ``server.max_connections`` a connection is
answered 503 and closed; a request aiohttp cannot parse, or a body that does not arrive, is
answered JSON that quotes nothing of the request, and the daemon's log holds none of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time

import aiohttp
import pytest

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

from .conftest import Daemon, start

pytestmark = pytest.mark.e2e

SLOW_CLIENTS = 300
SECRET_CODE = "SECRETCODE0123456789"
SECRET_HEADER = "SECRETHEADER987654321"


def port_of(daemon: Daemon) -> int:
    return int(daemon.base_url.rsplit(":", 1)[1])


def descriptors_for(count: int) -> None:
    """Raise this process's soft open-file limit to hold ``count`` sockets, or skip."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = count + 256  # the sandbox, the test's own files
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"the open-file limit ({hard}) cannot hold {count} sockets")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def stop(daemon: Daemon) -> None:
    assert daemon.process is not None
    daemon.process.terminate()
    await asyncio.to_thread(daemon.process.wait, 30)


async def test_trickling_connections_are_closed_while_healthz_answers(daemon: Daemon) -> None:
    descriptors_for(SLOW_CLIENTS)
    daemon.environment["MAILBOX_WORKER_SERVER__HEADER_TIMEOUT"] = "1"
    await start(daemon)
    port = port_of(daemon)
    try:
        began = time.monotonic()
        trickling = [asyncio.create_task(trickle(port, interval=0.1)) for _ in range(SLOW_CLIENTS)]
        health: list[int] = []
        async with aiohttp.ClientSession() as http, asyncio.timeout(DEADLINE * 2):
            while not all(task.done() for task in trickling):
                async with http.get(f"{daemon.base_url}/healthz") as answer:
                    health.append(answer.status)
                await asyncio.wait(trickling, timeout=0.1)
        outcomes = [task.result() for task in trickling]
        print(  # figures for the record, not assertions
            f"{SLOW_CLIENTS} trickling connections ended within "
            f"{time.monotonic() - began:.2f}s; /healthz answered {len(health)} times meanwhile"
        )
    finally:
        await stop(daemon)
    assert set(outcomes) <= {"answered 408", "reset"}, outcomes
    assert health and set(health) == {200}


async def test_connections_over_the_limit_are_answered_503(daemon: Daemon) -> None:
    daemon.environment["MAILBOX_WORKER_SERVER__MAX_CONNECTIONS"] = "20"
    await start(daemon)  # its readiness probe's connection closes with its session
    port = port_of(daemon)
    try:
        async with contextlib.AsyncExitStack() as held:
            admitted = 0
            async with asyncio.timeout(DEADLINE):
                while admitted < 20:  # the probe's connection may still be counted: retry
                    reader, writer = await held.enter_async_context(connection(port))
                    writer.write(get("/healthz"))
                    raw = await reader.readuntil(b"\r\n\r\n")
                    if raw.startswith(b"HTTP/1.1 200"):
                        await reader.readexactly(int(parse(raw).headers["content-length"]))
                        admitted += 1
            async with connection(port) as (reader, _):
                refused = parse(await read_to_end(reader))
        async with asyncio.timeout(DEADLINE):  # the held connections are gone: room again
            while await healthz_status(port) != 200:
                await asyncio.sleep(0.05)
    finally:
        await stop(daemon)
    assert (refused.status, refused.error_code) == (503, "too_many_connections")


async def test_unparsable_requests_and_slow_bodies_are_answered_json_quoting_nothing(
    daemon: Daemon,
) -> None:
    daemon.environment["MAILBOX_WORKER_SERVER__BODY_TIMEOUT"] = "1"
    account = daemon.cli("accounts", "create", "Contoso Ltd")
    api_key = daemon.cli("keys", "create", "--account", account)
    await start(daemon)
    port = port_of(daemon)
    callback = f"/oauth/callback?code={SECRET_CODE}&state=s"
    answers = {}
    try:
        for name, head in {
            "long header": get(callback, f"X-Note: {SECRET_HEADER}" + "y" * 9000),
            "long request line": get(callback + "&pad=" + "x" * 9000),
        }.items():
            async with connection(port) as (reader, writer):
                writer.write(head)
                answers[name] = parse(await read_to_end(reader))
        async with connection(port) as (reader, writer):
            writer.write(post_head("/v1/jobs", api_key, length=500) + b'{"mailbox_id": ')
            answers["slow body"] = await read_answer(reader)
    finally:
        await stop(daemon)
    assert {name: (answer.status, answer.error_code) for name, answer in answers.items()} == {
        "long header": (431, "request_header_too_large"),
        "long request line": (414, "request_line_too_long"),
        "slow body": (408, "request_timeout"),
    }
    log = daemon.log_path.read_text()
    for answer in answers.values():
        assert answer.headers["content-type"].startswith("application/json")
        for quoted in (SECRET_CODE, SECRET_HEADER, "oauth", "mailbox_id", api_key):
            assert quoted.encode() not in answer.body
    for secret in (SECRET_CODE, SECRET_HEADER, api_key):
        assert secret not in log
