"""The harness the API integration tests share (this module defines no tests).

``running_api`` serves ``create_app`` on 127.0.0.1 the way the daemon does
(``start_server``, the guarded server, with ``limits`` and ``body_timeout`` as the test
chooses) over real stores on a temporary SQLite database, with the real ``JobIntake``. The
mailbox connector is either the real ``MailboxService`` talking to ``FakeMicrosoftIdentity``
(a stand-in for Microsoft's identity platform: no network) or, for tests about the API's
own contract, a ``RecordingConnector`` that records what the API passed and answers what the
test set.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from multidict import CIMultiDictProxy
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from mailbox_worker.api.app import create_app
from mailbox_worker.api.server import ServerLimits, start_server
from mailbox_worker.api.services import (
    ApiServices,
    CallbackResult,
    ConnectionStart,
    MailboxConnector,
)
from mailbox_worker.config import DatabaseSettings, MicrosoftSettings
from mailbox_worker.db import migrate
from mailbox_worker.db.accounts import PERMISSIONS, AccountStore, Principal, new_id
from mailbox_worker.db.engine import create_engine, create_session_factory
from mailbox_worker.db.erasure import StorageScrubber
from mailbox_worker.db.locks import DatabaseLocks
from mailbox_worker.db.mailboxes import MailboxStore
from mailbox_worker.db.models import Mailbox
from mailbox_worker.errors import NotFound, PermanentError
from mailbox_worker.jobs.intake import JobIntake
from mailbox_worker.jobs.store import JobStore
from mailbox_worker.mailboxes.revocations import Revocations
from mailbox_worker.mailboxes.service import MailboxService
from mailbox_worker.policy.identities import AccountId
from mailbox_worker.prometheus import PrometheusTelemetry
from mailbox_worker.tokens.access_tokens import AccessTokens
from mailbox_worker.tokens.identity_client import Grant
from mailbox_worker.tokens.keys.file_source import FileKeySource
from mailbox_worker.tokens.microsoft import MicrosoftIdentity
from mailbox_worker.tokens.vault import TokenVault

MESSAGE_LIMIT = 256 * 1024
"""What the intake lets the fake provider accept per message (bytes)."""
MAX_REQUEST_BYTES = 1024 * 1024
MAILBOX_ADDRESS = "billing@contoso.example"
PUBLIC_URL = "http://127.0.0.1"
FAKE_TENANT = "00000000-0000-4000-8000-00000000c0de"
FAKE_OBJECT_ID = "00000000-0000-4000-8000-0000000000b1"


# -- a stand-in for Microsoft's identity platform -------------------------------------------


class FakeMicrosoftIdentity(MicrosoftIdentity):
    """Starts authorizations and redeems codes the way msal would, without any network.

    The consent page "issues" ``code-<state>``; ``grant_scopes`` (all requested by default)
    and ``address`` say what the admin's consent gives.
    """

    def __init__(self) -> None:
        super().__init__(MicrosoftSettings(client_id="test-client", client_secret="unused"))
        self.address = MAILBOX_ADDRESS
        self.account: AccountId | None = AccountId(FAKE_TENANT, FAKE_OBJECT_ID)
        self.grant_scopes: tuple[str, ...] | None = None

    def start(self, scopes: list[str], redirect_uri: str, login_hint: str | None) -> dict[str, Any]:
        state = secrets.token_urlsafe(24)
        return {
            "state": state,
            "scopes": list(scopes),
            "auth_uri": f"https://login.identity.test/authorize?state={state}",
        }

    def redeem(self, flow: dict[str, Any], response: dict[str, str]) -> Grant:
        if response.get("code") != f"code-{flow['state']}":
            raise PermanentError("the identity platform refused the code", code="code_rejected")
        scopes = self.grant_scopes if self.grant_scopes is not None else tuple(flow["scopes"])
        return Grant(
            cache=json.dumps({"fake": True}),
            address=self.address,
            granted_scopes=scopes,
            account=self.account,
        )


def consent_code(authorization_url: str) -> tuple[str, str]:
    """``(state, code)`` the fake consent page gives for ``authorization_url``."""
    state = parse_qs(urlsplit(authorization_url).query)["state"][0]
    return state, f"code-{state}"


# -- a connector that records what the API asked ---------------------------------------------


@dataclass
class RecordingConnector:
    """A ``MailboxConnector`` that records each call and answers from ``mailboxes``."""

    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    mailboxes: dict[str, Mailbox] = field(default_factory=dict)
    callback: CallbackResult = field(
        default_factory=lambda: CallbackResult("connected", "The mailbox is connected.", None, None)
    )

    def add(self, account_id: str, state: str = "pending_consent") -> Mailbox:
        now = dt.datetime.now(dt.UTC)
        mailbox = Mailbox(
            id=new_id("mbx"),
            account_id=account_id,
            provider="microsoft",
            capabilities=["send"],
            address=None,
            state=state,
            state_reason=None,
            granted_scopes=[],
            created_at=now,
            updated_at=now,
        )
        self.mailboxes[mailbox.id] = mailbox
        return mailbox

    def _find(self, principal: Principal, mailbox_id: str) -> Mailbox:
        mailbox = self.mailboxes.get(mailbox_id)
        if mailbox is None or mailbox.account_id != principal.account_id:
            raise NotFound("no such mailbox in this account", code="mailbox_not_found")
        return mailbox

    async def create(
        self,
        principal: Principal,
        provider: str,
        capabilities: list[str],
        return_url: str | None,
        login_hint: str | None,
    ) -> ConnectionStart:
        self.calls.append(("create", (provider, capabilities, return_url, login_hint)))
        mailbox = self.add(principal.account_id)
        return ConnectionStart(mailbox, f"https://login.identity.test/authorize?m={mailbox.id}")

    async def reconnect(
        self, principal: Principal, mailbox_id: str, return_url: str | None
    ) -> ConnectionStart:
        self.calls.append(("reconnect", (mailbox_id, return_url)))
        mailbox = self._find(principal, mailbox_id)
        return ConnectionStart(mailbox, f"https://login.identity.test/authorize?m={mailbox.id}")

    async def get(self, principal: Principal, mailbox_id: str) -> Mailbox:
        self.calls.append(("get", (mailbox_id,)))
        return self._find(principal, mailbox_id)

    async def list(self, principal: Principal) -> list[Mailbox]:
        self.calls.append(("list", ()))
        return [m for m in self.mailboxes.values() if m.account_id == principal.account_id]

    async def disconnect(self, principal: Principal, mailbox_id: str) -> Mailbox:
        self.calls.append(("disconnect", (mailbox_id,)))
        mailbox = self._find(principal, mailbox_id)
        mailbox.state = "disconnected"
        return mailbox

    async def complete(self, query: Mapping[str, str]) -> CallbackResult:
        self.calls.append(("complete", (dict(query),)))
        return self.callback


# -- the running API ------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_code(self) -> str:
        return str(self.json()["error"]["code"])


@dataclass
class RunningApi:
    base_url: str
    engine: AsyncEngine
    accounts: AccountStore
    mailboxes: MailboxStore
    jobs: JobStore
    registry: CollectorRegistry
    connector: MailboxConnector
    identity: FakeMicrosoftIdentity
    http: aiohttp.ClientSession

    async def account_with_key(
        self, permissions: frozenset[str] = PERMISSIONS, name: str = "Contoso Ltd"
    ) -> tuple[str, str]:
        """A new account and an API key for it: ``(account_id, key)``."""
        account = await self.accounts.create_account(name)
        issued = await self.accounts.create_api_key(account.id, "test", permissions)
        return account.id, issued.secret

    async def key_for(self, account_id: str, permissions: frozenset[str]) -> str:
        return (await self.accounts.create_api_key(account_id, "test", permissions)).secret

    async def connected_mailbox(
        self, account_id: str, capabilities: tuple[str, ...] = ("send", "draft")
    ) -> Mailbox:
        """A mailbox made connected directly in the store."""
        mailbox = await self.mailboxes.create(
            account_id, "microsoft", list(capabilities), actor="test"
        )
        await self.mailboxes.mark_connected(
            mailbox.id, MAILBOX_ADDRESS, ["Mail.Send", "Mail.ReadWrite"]
        )
        found = await self.mailboxes.get(mailbox.id)
        assert found is not None
        return found

    async def call(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        json_body: Any = None,
        data: bytes | str | io.BytesIO | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """One request; ``key`` becomes the bearer credential. Redirects are not followed."""
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        async with self.http.request(
            method, path, json=json_body, data=data, headers=sent, allow_redirects=False
        ) as response:
            return Answer(response.status, response.headers, await response.read())


async def _readiness(engine: AsyncEngine) -> Mapping[str, bool]:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    return {"database": True, "migrations": not await migrate.pending(engine)}


@contextlib.asynccontextmanager
async def running_api(
    tmp_path: Path,
    *,
    connector: Callable[[MailboxService], MailboxConnector] | None = None,
    ready: Callable[[], Any] | None = None,
    limits: ServerLimits | None = None,
    body_timeout: float = 60.0,
) -> AsyncIterator[RunningApi]:
    """The API on a real socket over a fresh, migrated SQLite database.

    ``connector`` may replace the real mailbox service (it receives it, to wrap or ignore).
    """
    engine = create_engine(DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path}/t.db"))
    await migrate.upgrade(engine)
    sessions = create_session_factory(engine)
    accounts, mailboxes, jobs = AccountStore(sessions), MailboxStore(sessions), JobStore(sessions)
    registry = CollectorRegistry()
    metrics = PrometheusTelemetry(registry)
    intake = JobIntake(jobs, mailboxes, lambda provider, mode: MESSAGE_LIMIT, metrics)
    identity = FakeMicrosoftIdentity()
    scrubber = StorageScrubber(engine)
    keys = FileKeySource(tmp_path / "keys.json", create_if_missing=True)
    vault = TokenVault(sessions, keys, scrubber)
    identities = {"microsoft": identity}
    tokens = AccessTokens(vault, identities, metrics, DatabaseLocks(engine))
    revocations = Revocations(sessions, vault, identities, accounts, scrubber)
    service = MailboxService(
        mailboxes,
        jobs,
        accounts,
        vault,
        tokens,
        identities,
        revocations,
        f"{PUBLIC_URL}/oauth/callback",
    )
    chosen: MailboxConnector = service if connector is None else connector(service)
    services = ApiServices(
        accounts=accounts,
        jobs=intake,
        mailboxes=chosen,
        telemetry=metrics,
        metrics_page=metrics.render,
        ready=ready or (lambda: _readiness(engine)),
        max_request_bytes=MAX_REQUEST_BYTES,
        body_timeout=body_timeout,
    )
    runner, site = await start_server(
        create_app(services), "127.0.0.1", 0, limits or ServerLimits()
    )
    try:
        base_url = f"http://127.0.0.1:{site.port}"
        async with aiohttp.ClientSession(base_url=base_url) as http:
            yield RunningApi(
                base_url=base_url,
                engine=engine,
                accounts=accounts,
                mailboxes=mailboxes,
                jobs=jobs,
                registry=registry,
                connector=chosen,
                identity=identity,
                http=http,
            )
    finally:
        await runner.cleanup()
        await engine.dispose()


def job_request(mailbox_id: str, **message: Any) -> dict[str, Any]:
    """A valid ``JobRequest``; ``message`` items replace or add message fields."""
    return {
        "mailbox_id": mailbox_id,
        "mode": "send",
        "reference": "INV-2024-0042",
        "message": {
            "to": [{"address": "accounts@fabrikam.example", "name": "Fabrikam Accounts"}],
            "subject": "Invoice INV-2024-0042",
            "text": "Please find our invoice attached.",
            "attachments": [
                {
                    "filename": "INV-2024-0042.pdf",
                    "content_type": "application/pdf",
                    "content_base64": "JVBERi0xLjQK",
                }
            ],
            **message,
        },
    }
