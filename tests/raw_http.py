"""Raw TCP clients for the server tests (this module defines no tests): what a slow,
malformed or surplus client does, byte by byte, which an HTTP client library will not."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

DEADLINE = 15.0
"""A generous bound on waiting for an expected event (not a performance claim)."""


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_code(self) -> str:
        return str(self.json()["error"]["code"])


@contextlib.asynccontextmanager
async def connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """An open TCP connection to the server, closed (and waited for) on exit."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_to_end(reader: asyncio.StreamReader, within: float = DEADLINE) -> bytes:
    """Everything the server sends until it closes the connection."""
    async with asyncio.timeout(within):
        return await reader.read()


async def read_answer(reader: asyncio.StreamReader, within: float = DEADLINE) -> RawAnswer:
    """One HTTP answer with a Content-Length body, leaving the connection open."""
    async with asyncio.timeout(within):
        head = await reader.readuntil(b"\r\n\r\n")
        answer = parse_head(head)
        body = await reader.readexactly(int(answer.headers.get("content-length", "0")))
    return RawAnswer(answer.status, answer.headers, body)


def parse(raw: bytes) -> RawAnswer:
    """A whole answer as read by ``read_to_end``."""
    head, _, body = raw.partition(b"\r\n\r\n")
    answer = parse_head(head)
    return RawAnswer(answer.status, answer.headers, body)


def parse_head(head: bytes) -> RawAnswer:
    status_line, *lines = head.decode("latin-1").strip().split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawAnswer(int(status_line.split()[1]), headers, b"")


def get(path: str, *extra_headers: str) -> bytes:
    """A complete GET request head (keep-alive, HTTP/1.1)."""
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *extra_headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def post_head(path: str, key: str, *, length: int) -> bytes:
    """A JSON POST request head announcing ``length`` bytes of body."""
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {key}",
        "Content-Type: application/json",
        f"Content-Length: {length}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def trickle(port: int, interval: float = 0.05) -> str:
    """Send a request head a byte every ``interval`` seconds (faster than any idle timer)
    until the server closes the connection; say how it ended."""
    async with connection(port) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        reading = asyncio.ensure_future(read_to_end(reader))
        while not reading.done():
            writer.write(b"a")
            await asyncio.wait([reading], timeout=interval)
        try:
            raw = reading.result()
        except ConnectionResetError:  # our trickle crossed the server's close
            return "reset"
        return f"answered {parse(raw).status}" if raw else "closed silently"


async def healthz_status(port: int) -> int:
    """The status of ``GET /healthz`` on a new connection."""
    async with connection(port) as (reader, writer):
        writer.write(get("/healthz", "Connection: close"))
        return parse(await read_to_end(reader)).status
