"""A daemon (the real App) beside the sandbox, and an admin's browser played with aiohttp.

Used by the connect tests of both providers; the ``world`` and ``multi_tenant_world`` fixtures
are exported by conftest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp
import pytest
from sqlalchemy import func, select

from mailbox_worker.accounts import Principal
from mailbox_worker.app import App
from mailbox_worker.clock import utcnow
from mailbox_worker.config import DatabaseSettings
from mailbox_worker.db.models import Mailbox, TokenRecord
from mailbox_worker.demo import _FormParser, demo_settings
from mailbox_worker.jobs.intake import JobView, Submission
from mailbox_worker.sandbox import Sandbox

ADDRESS = "billing@contoso.example"


@dataclasses.dataclass
class World:
    app: App
    sandbox: Sandbox
    principal: Principal
    ssl: ssl.SSLContext

    async def consent(
        self, url: str, *, login: str = ADDRESS, action: str = "accept", untick: str | None = None
    ) -> dict[str, str]:
        """Play the admin on the consent page; the query the provider redirects back with."""
        async with aiohttp.ClientSession() as browser:
            async with browser.get(url, ssl=self.ssl) as page:
                assert page.status == 200
                parser = _FormParser()
                parser.feed(await page.text())
            fields = [
                (name, login if name == "login" else value)
                for name, value in parser.fields
                if not (untick and value.endswith(untick))
            ]
            fields.append(("action", action))
            target = urljoin(url, parser.action or "")
            async with browser.post(
                target, data=fields, ssl=self.ssl, allow_redirects=False
            ) as answer:
                assert answer.status in (302, 303), await answer.text()
                location = answer.headers["Location"]
        return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}

    async def connected(
        self,
        provider: str = "microsoft",
        capabilities: tuple[str, ...] = ("send",),
        login: str = ADDRESS,
    ) -> Mailbox:
        """A mailbox connected through the real consent flow."""
        service = self.app.mailbox_service
        start = await service.create(self.principal, provider, list(capabilities), None, login)
        result = await service.complete(await self.consent(start.authorization_url, login=login))
        assert result.outcome == "connected", result.message
        mailbox = await self.app.mailboxes.get(start.mailbox.id)
        assert mailbox is not None
        return mailbox

    async def enqueue(self, mailbox_id: str, **fields: object) -> JobView:
        """A send job for ``mailbox_id`` through the intake, as the API would submit it."""
        principal = Principal(self.principal.account_id, "k", frozenset({"jobs:write"}))
        body = {
            "mailbox_id": mailbox_id,
            "mode": "send",
            "message": {"to": [{"address": "ap@fabrikam.example"}], "subject": "s", "text": "t"},
            **fields,
        }
        job, _ = await self.app.intake.submit(principal, Submission(body, None))
        return job

    async def counters(self) -> dict[str, int]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.sandbox.base_url}/_sandbox/counters", ssl=self.ssl) as answer,
        ):
            counters: dict[str, int] = (await answer.json())["counters"]
        return counters

    async def token_records(self) -> int:
        async with self.app.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(TokenRecord)) or 0)


@contextlib.asynccontextmanager
async def running_world(
    database_url: str,
    tmp_path: Path,
    authority_tenant: str = "contoso",
    *,
    sandbox_clock: bool = False,
    google_drafts: bool = True,
) -> AsyncIterator[World]:
    """The sandbox and a migrated daemon whose Entra authority is ``authority_tenant`` (a
    tenant, or ``organizations`` for an app open to every work account, the default of
    ``MicrosoftSettings``). With ``sandbox_clock`` the daemon reads the sandbox's clock, so
    ``sandbox.state.advance`` moves both; ``google_drafts`` is the ``google.drafts`` setting."""
    sandbox = Sandbox(tmp_path / "sandbox")
    await sandbox.start()
    settings = demo_settings(tmp_path, sandbox, 8080)
    authority = sandbox.authority_url(authority_tenant)
    settings = dataclasses.replace(
        settings,
        database=DatabaseSettings(url=database_url),
        microsoft=dataclasses.replace(settings.microsoft, authority=authority),
        google=dataclasses.replace(settings.google, drafts=google_drafts),
    )
    app = App.build(settings, clock=sandbox.state.clock.utcnow if sandbox_clock else utcnow)
    await app.migrate()
    account = await app.accounts.create_account("acme")
    principal = Principal(account.id, "test-key", frozenset({"mailboxes:write"}))
    context = ssl.create_default_context(cafile=str(sandbox.ca_path))
    try:
        yield World(app, sandbox, principal, context)
    finally:
        await app.close()
        await sandbox.stop()


@pytest.fixture
async def world(migrated_database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with running_world(migrated_database_url, tmp_path) as running:
        yield running


@pytest.fixture
async def multi_tenant_world(migrated_database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    """A world whose daemon signs users in at ``organizations`` (any Entra tenant)."""
    async with running_world(migrated_database_url, tmp_path, "organizations") as running:
        yield running
