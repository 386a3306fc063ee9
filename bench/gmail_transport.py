"""Two ways to drive google-api-python-client from the event loop, against the Gmail sandbox.

* ``aiohttp``: the library builds each request (no I/O), aiohttp sends it — what
  ``providers/gmail.py`` does;
* ``executor``: the library executes its own requests (httplib2 through google-auth-httplib2,
  one client per thread: httplib2 is not thread-safe) in a bounded ``ThreadPoolExecutor``.

For each: small invoices (``--small`` messages with a 10 kB PDF, ``raw`` JSON) and large ones
(``--large`` messages with a 20 MB PDF, resumable upload), ``--concurrency`` at a time. Prints
wall time, messages per second, CPU seconds of this process per message and the event loop's
lag (how late a 5 ms timer fires: the median and the worst) while the sends run. The sandbox
runs in a thread with its own event loop so that its work is not counted as the client's lag;
both share this process's CPU. Never passes or fails on time.

    .venv/bin/python bench/gmail_transport.py [--small 200] [--large 4] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import io
import secrets
import ssl
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import google.oauth2.credentials
import google_auth_httplib2
import googleapiclient.discovery
import httplib2
from googleapiclient.http import MediaIoBaseUpload

from mailbox_worker.providers.base import OutgoingMessage
from mailbox_worker.providers.gmail import RESUMABLE_THRESHOLD, UPLOAD_CHUNK, GmailProvider
from mailbox_worker.providers.google_gate import GoogleEndpoints, GoogleOperationGate
from mailbox_worker.sandbox import Sandbox

USER = "invoices@fabrikam.example"
CLIENT_ID = "sandbox-google-client"
SCOPES = ["https://www.googleapis.com/auth/gmail.send"]


def invoice(attachment_size: int) -> bytes:
    pdf = base64.encodebytes(secrets.token_bytes(attachment_size)).replace(b"\n", b"\r\n")
    head = (
        f"From: {USER}\r\nTo: ap@example.com\r\nSubject: Invoice\r\n"
        f"Message-ID: <{secrets.token_hex(8)}@fabrikam.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        "Content-Type: text/plain\r\n\r\nattached\r\n--b\r\n"
        "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="invoice.pdf"\r\n\r\n'
    )
    return head.encode() + pdf + b"--b--\r\n"


class SandboxThread:
    """The sandbox on an event loop of its own, in a thread."""

    def __init__(self, data_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sandbox = Sandbox(data_dir)
        self.call(self.sandbox.start())

    def call(self, work: Awaitable[Any]) -> Any:
        async def wrapped() -> Any:
            return await work

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result()

    def access_token(self) -> str:
        async def issue() -> str:
            state = self.sandbox.state
            state.gmail.set_limits(USER, daily_sending_limit=10**9, units_per_minute=10**9)
            grant, _ = state.google.consent(USER, CLIENT_ID, ["openid", "email", *SCOPES])
            return state.google.issue_access_token(grant, SCOPES, 3600)

        result: str = self.call(issue())
        return result

    def stop(self) -> None:
        self.call(self.sandbox.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


async def watch_lag(stop: asyncio.Event, lags: list[float]) -> None:
    """How late a 5 ms timer fires, each time, until ``stop``."""
    interval = 0.005
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(interval)
        lags.append(max(0.0, time.perf_counter() - started - interval))


async def measure(
    name: str, messages: list[bytes], concurrency: int, send: Callable[[bytes], Awaitable[None]]
) -> None:
    stop, lags = asyncio.Event(), list[float]()
    watcher = asyncio.create_task(watch_lag(stop, lags))
    slots = asyncio.Semaphore(concurrency)

    async def one(message: bytes) -> None:
        async with slots:
            await send(message)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(message) for message in messages))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stop.set()
    await watcher
    lag_ms = sorted(lag * 1000 for lag in lags) or [0.0]
    print(
        f"  {name:<9} {len(messages):>4} msgs  {wall:7.2f} s  {len(messages) / wall:7.1f} msg/s  "
        f"cpu {cpu / len(messages) * 1000:7.1f} ms/msg  loop lag median "
        f"{statistics.median(lag_ms):6.2f} ms  max {lag_ms[-1]:7.1f} ms"
    )


def executor_sender(
    sandbox: Sandbox, token: str, concurrency: int
) -> tuple[Callable[[bytes], Awaitable[None]], concurrent.futures.ThreadPoolExecutor]:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency)
    local = threading.local()

    def client() -> Any:
        if not hasattr(local, "gmail"):
            transport = httplib2.Http(ca_certs=str(sandbox.ca_path), timeout=120)
            transport.redirect_codes = transport.redirect_codes - {308}  # see D7
            credentials = google.oauth2.credentials.Credentials(token)  # type: ignore[no-untyped-call]
            local.gmail = googleapiclient.discovery.build(
                "gmail",
                "v1",
                http=google_auth_httplib2.AuthorizedHttp(credentials, http=transport),
                static_discovery=True,
                client_options={"api_endpoint": sandbox.gmail_api_endpoint},
            )
        return local.gmail

    def send_blocking(message: bytes) -> None:
        messages = client().users().messages()
        if len(message) <= RESUMABLE_THRESHOLD:
            raw = base64.urlsafe_b64encode(message).decode()
            request = messages.send(userId="me", body={"raw": raw})
        else:
            media = MediaIoBaseUpload(
                _stream(message), "message/rfc822", chunksize=UPLOAD_CHUNK, resumable=True
            )
            request = messages.send(userId="me", body={}, media_body=media)
        request.execute(num_retries=0)

    async def send(message: bytes) -> None:
        await asyncio.get_running_loop().run_in_executor(pool, send_blocking, message)

    return send, pool


def _stream(message: bytes) -> io.BytesIO:
    return io.BytesIO(message)


async def main(small: int, large: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory(prefix="mw-bench-gmail-") as directory:
        running = SandboxThread(Path(directory))
        sandbox = running.sandbox
        try:
            token = running.access_token()
            gate = GoogleOperationGate(
                GoogleEndpoints(
                    sandbox.gmail_api_endpoint,
                    sandbox.google_token_url,
                    sandbox.google_revoke_url,
                    f"{sandbox.base_url}/v1/userinfo",
                )
            )
            context = ssl.create_default_context(cafile=str(sandbox.ca_path))
            provider = GmailProvider(gate, sandbox.gmail_api_endpoint, ssl_context=context)

            async def via_aiohttp(message: bytes) -> None:
                outgoing = OutgoingMessage(job_id="bench", mime=message, message_id="<bench>")
                await provider.send(token, outgoing)

            via_executor, pool = executor_sender(sandbox, token, concurrency)
            for label, size, count, parallel in (
                ("small", 10_000, small, concurrency),
                ("large", 20 * 1024 * 1024, large, min(concurrency, 2)),
            ):
                messages = [invoice(size) for _ in range(count)]
                print(
                    f"{label}: {count} invoices of {len(messages[0]):,} bytes, {parallel} at once"
                )
                for name, send in (("aiohttp", via_aiohttp), ("executor", via_executor)):
                    await measure(name, messages, parallel, send)
            await provider.close()
            pool.shutdown()
        finally:
            running.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.small, arguments.large, arguments.concurrency))
