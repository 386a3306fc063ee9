"""The admin page's test harness: the daemon's real application (``App.build``: SQLite, vault,
msal) on a real socket, Microsoft played by the sandbox, and a client that carries the session
cookie by hand (aiohttp's cookie jar ignores cookies set by an IP address), which also lets the
tests read its attributes.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp
from aiohttp.test_utils import TestServer

from mailbox_worker.api.admin_session import COOKIE_NAME
from mailbox_worker.app import App
from mailbox_worker.config import (
    DatabaseSettings,
    KeySettings,
    MicrosoftSettings,
    ServerSettings,
    Settings,
)
from mailbox_worker.demo import _FormParser
from mailbox_worker.sandbox import Sandbox
from tests.ports import free_port

ADDRESS = "billing@contoso.example"
ALL_PERMISSIONS = frozenset({"jobs:read", "jobs:write", "mailboxes:read", "mailboxes:write"})


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    text: str
    set_cookie: list[str]


@dataclass
class Admin:
    app: App
    base_url: str
    account_id: str
    key: str
    sandbox: Sandbox
    sandbox_ssl: ssl.SSLContext
    http: aiohttp.ClientSession

    async def request(
        self,
        method: str,
        path: str,
        *,
        cookie: str | None = None,
        form: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        sent = dict(headers or {})
        if cookie is not None:
            sent["Cookie"] = f"{COOKIE_NAME}={cookie}"
        async with self.http.request(
            method, self.base_url + path, data=form, headers=sent, allow_redirects=False
        ) as response:
            return Answer(
                response.status,
                dict(response.headers),
                await response.text(),
                response.headers.getall("Set-Cookie", []),
            )

    async def sign_in(self, key: str | None = None) -> str:
        """The session cookie's value for ``key`` (the fixture's by default)."""
        answer = await self.request("POST", "/admin/session", form={"api_key": key or self.key})
        assert answer.status == 303, answer.text
        return session_cookie(answer)[COOKIE_NAME].value

    async def csrf(self, cookie: str) -> str:
        page = await self.request("GET", "/admin", cookie=cookie)
        return field_value(page.text, "csrf_token")

    async def consent(self, url: str, *, action: str = "accept") -> str:
        """Play the admin on the sandbox's consent page; where it sends the browser back."""
        async with self.http.get(url, ssl=self.sandbox_ssl) as page:
            parser = _FormParser()
            parser.feed(await page.text())
        fields = [(name, ADDRESS if name == "login" else value) for name, value in parser.fields]
        fields.append(("action", action))
        async with self.http.post(
            urljoin(url, parser.action or ""),
            data=fields,
            ssl=self.sandbox_ssl,
            allow_redirects=False,
        ) as answer:
            callback = answer.headers["Location"]
        async with self.http.get(callback, allow_redirects=False) as done:
            assert done.status == 303
            return done.headers["Location"]


def session_cookie(answer: Answer) -> SimpleCookie:
    cookie: SimpleCookie = SimpleCookie()
    for header in answer.set_cookie:
        cookie.load(header)
    return cookie


def field_value(page: str, name: str) -> str:
    marker = f'name="{name}" value="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]


def settings(data_dir: Path, sandbox: Sandbox, port: int) -> Settings:
    """The daemon on ``port`` with Microsoft played by the sandbox (only what this needs)."""
    return Settings(
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{data_dir / 'admin.db'}"),
        server=ServerSettings(host="127.0.0.1", port=port, public_url=f"http://127.0.0.1:{port}"),
        keys=KeySettings(source="file", file=str(data_dir / "keys.json"), create_if_missing=True),
        microsoft=MicrosoftSettings(
            client_id="sandbox-client",
            client_secret="sandbox-secret",  # the sandbox demo app, not a secret
            authority=sandbox.authority_url(),
            graph_url=sandbox.graph_url,
            ca_file=str(sandbox.ca_path),
        ),
    )


@contextlib.asynccontextmanager
async def running_admin(tmp_path: Path) -> AsyncIterator[Admin]:
    """The daemon's application on a real socket with Microsoft played by the sandbox, an
    account and an API key with ``ALL_PERMISSIONS``."""
    sandbox = Sandbox(tmp_path / "sandbox")
    await sandbox.start()
    try:
        port = free_port()
        app = App.build(settings(tmp_path, sandbox, port))
        try:
            await app.migrate()
            server = TestServer(app.web_app(), host="127.0.0.1", port=port)
            await server.start_server()
            try:
                account = await app.accounts.create_account("Contoso Ltd")
                issued = await app.accounts.create_api_key(account.id, "admin", ALL_PERMISSIONS)
                async with aiohttp.ClientSession() as http:
                    yield Admin(
                        app,
                        f"http://127.0.0.1:{port}",
                        account.id,
                        issued.secret,
                        sandbox,
                        ssl.create_default_context(cafile=str(sandbox.ca_path)),
                        http,
                    )
            finally:
                await server.close()
        finally:
            await app.close()
    finally:
        await sandbox.stop()
