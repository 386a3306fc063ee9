"""What the Gmail sandbox tests share: the unmodified google-api-python-client built from its
bundled discovery document and pointed at the sandbox (docs/providers.md D7), invoices in RFC
822 form, and the inspection API.

google-api-python-client and httplib2 are synchronous, so calls run in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import google.oauth2.credentials
import google_auth_httplib2
import googleapiclient.discovery
import googleapiclient.errors
import httplib2
import pytest
import requests

from mailbox_worker.sandbox import Sandbox

from .google_helpers import COMPOSE, SEND, USER, connect, credentials


@dataclass
class GmailClients:
    """Builds Gmail clients for one test and closes their connections after it."""

    sandbox: Sandbox
    http: aiohttp.ClientSession
    session: requests.Session
    transports: list[httplib2.Http] = field(default_factory=list)

    async def connect(
        self, untick: tuple[str, ...] = ()
    ) -> tuple[Any, google.oauth2.credentials.Credentials]:
        """A consent (minus ``untick``), then a client holding the sandbox-issued tokens."""
        tokens = await connect(self.http, self.session, self.sandbox, untick=untick)
        granted = [scope for scope in (SEND, COMPOSE) if scope not in untick]
        creds = credentials(self.sandbox, tokens, granted)
        transport = httplib2.Http(ca_certs=str(self.sandbox.ca_path), timeout=60)
        # What googleapiclient.http.build_http does to its own Http: a resumable upload's 308
        # is progress, not a redirect (httplib2 would demand a Location).
        transport.redirect_codes = transport.redirect_codes - {308}
        self.transports.append(transport)
        return gmail_client(self.sandbox, creds, transport), creds

    def close(self) -> None:
        """Close every connection the clients opened."""
        for transport in self.transports:
            transport.close()


def gmail_client(
    sandbox: Sandbox, creds: google.oauth2.credentials.Credentials, transport: httplib2.Http
) -> Any:
    """``build("gmail", "v1", static_discovery=True)`` with only ``api_endpoint`` changed; the
    transport is google-auth-httplib2 over an httplib2 that trusts the sandbox's CA."""
    authorized = google_auth_httplib2.AuthorizedHttp(creds, http=transport)
    return googleapiclient.discovery.build(
        "gmail",
        "v1",
        http=authorized,
        static_discovery=True,
        client_options={"api_endpoint": sandbox.gmail_api_endpoint},
    )


async def execute(request: Any) -> dict[str, Any]:
    """Run a client request (never retried: docs/providers.md D7) in a thread."""
    result: dict[str, Any] = await asyncio.to_thread(request.execute, num_retries=0)
    return result


async def http_error(request: Any) -> tuple[int, dict[str, Any], Any]:
    """The status, JSON body and response headers of a request expected to fail."""
    with pytest.raises(googleapiclient.errors.HttpError) as raised:
        await execute(request)
    body: dict[str, Any] = json.loads(raised.value.content)
    return raised.value.resp.status, body, raised.value.resp


def invoice(
    job: str | None = None, attachment_size: int = 2_000, to: str | None = "customer@example.com"
) -> tuple[bytes, str]:
    """An RFC 822 invoice (CRLF, 7-bit) with a base64 PDF of ``attachment_size`` random bytes,
    and its ``Message-ID`` (derived from ``job`` as the daemon will)."""
    job = job or secrets.token_hex(8)
    message_id = f"<job-{job}@invoices.fabrikam.example>"
    encoded = base64.encodebytes(secrets.token_bytes(attachment_size)).replace(b"\n", b"\r\n")
    head = [f"From: {USER}"]
    if to is not None:
        head.append(f"To: {to}")
    head += [
        f"Subject: Invoice {job}",
        f"Message-ID: {message_id}",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="invoice-boundary"',
        "",
        "--invoice-boundary",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "Please find your invoice attached.",
        "--invoice-boundary",
        'Content-Type: application/pdf; name="invoice.pdf"',
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="invoice.pdf"',
        "",
        "",
    ]
    tail = b"--invoice-boundary--\r\n"
    return "\r\n".join(head).encode("ascii") + encoded + tail, message_id


def raw_field(message: bytes) -> str:
    """The ``raw`` of a JSON body: base64url (docs/providers.md D2)."""
    return base64.urlsafe_b64encode(message).decode("ascii")


async def stored(
    http: aiohttp.ClientSession, sandbox: Sandbox, **query: str
) -> list[dict[str, Any]]:
    """The inspection API's listing."""
    url = f"{sandbox.base_url}/_sandbox/google/messages"
    async with http.get(url, params=query) as answer:
        assert answer.status == 200
        document = await answer.json()
    return list(document["messages"])


async def raw_of(http: aiohttp.ClientSession, sandbox: Sandbox, message_id: str) -> bytes:
    """A stored message's bytes from the inspection API."""
    url = f"{sandbox.base_url}/_sandbox/google/messages/{message_id}/raw"
    async with http.get(url) as answer:
        assert (answer.status, answer.content_type) == (200, "message/rfc822")
        return await answer.read()


async def set_limits(
    http: aiohttp.ClientSession, sandbox: Sandbox, address: str = USER, **limits: int
) -> dict[str, Any]:
    """``POST /_sandbox/google/users/{address}/limits``."""
    url = f"{sandbox.base_url}/_sandbox/google/users/{address}/limits"
    async with http.post(url, json=limits) as answer:
        assert answer.status == 200, await answer.text()
        document: dict[str, Any] = await answer.json()
    return document


def google_error(
    code: int, message: str, reason: str, status: str | None, domain: str = "global"
) -> dict[str, Any]:
    """Google's error body (docs/providers.md D4) with one ``errors[]`` entry."""
    error: dict[str, Any] = {
        "code": code,
        "message": message,
        "errors": [{"message": message, "domain": domain, "reason": reason}],
    }
    if status is not None:
        error["status"] = status
    return {"error": error}
