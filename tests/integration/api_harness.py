"""The harness the API integration tests share (this module defines no tests).

``running_api`` builds the daemon through its own composition root (``App.build``) on a
temporary SQLite database, and serves its API on 127.0.0.1 the way the daemon does
(``start_server``, the guarded server, with ``limits`` and ``body_timeout`` as the test
chooses). Only what reaches outside is replaced, through ``App.build``'s seams: the
identity platform is ``FakeMicrosoftIdentity`` (no network), the mail transport is
``IdleProvider`` (its message limit only: no worker runs here), and the clock is a
``ShiftedClock`` a test can move forward. For tests about the API's own contract, the
mailbox connector may be replaced by a ``RecordingConnector`` that records what the API
passed and answers what the test set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import json
import re
import secrets
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from multidict import CIMultiDictProxy
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from mailbox_worker.accounts import Principal
from mailbox_worker.api.app import create_app
from mailbox_worker.api.server import ServerLimits, start_server
from mailbox_worker.api.services import (
    CallbackResult,
    ConnectionStart,
    MailboxConnector,
    MailboxView,
)
from mailbox_worker.app import App
from mailbox_worker.clock import new_id, utcnow
from mailbox_worker.config import (
    DatabaseSettings,
    KeySettings,
    MicrosoftSettings,
    RateLimitSettings,
    ServerSettings,
    Settings,
)
from mailbox_worker.db.accounts import PERMISSIONS, AccountStore
from mailbox_worker.db.mailboxes import MailboxStore
from mailbox_worker.db.models import Mailbox
from mailbox_worker.errors import NotFound, PermanentError
from mailbox_worker.jobs.queue import JobQueue
from mailbox_worker.jobs.store import JobStore
from mailbox_worker.mailboxes.service import MailboxService
from mailbox_worker.policy.identities import AccountId
from mailbox_worker.providers.base import (
    UNTRACKED,
    DeliveryMode,
    DeliveryProgress,
    DeliveryReceipt,
    OutgoingMessage,
)
from mailbox_worker.states import MailboxState
from mailbox_worker.tokens.identity_client import Grant
from mailbox_worker.tokens.microsoft import MicrosoftIdentity

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


# -- a transport that is never asked to deliver, and a clock a test moves -------------------


class IdleProvider:
    """A ``MailProvider`` whose only use here is its message limit (no worker runs)."""

    name = "microsoft"

    def max_message_bytes(self, mode: DeliveryMode, capabilities: Collection[str]) -> int:
        return MESSAGE_LIMIT

    async def send(
        self,
        access_token: str,
        message: OutgoingMessage,
        *,
        progress: DeliveryProgress = UNTRACKED,
    ) -> DeliveryReceipt:
        raise AssertionError("the API harness runs no worker")

    async def create_draft(
        self,
        access_token: str,
        message: OutgoingMessage,
        *,
        progress: DeliveryProgress = UNTRACKED,
    ) -> DeliveryReceipt:
        raise AssertionError("the API harness runs no worker")

    async def close(self) -> None:
        return None


@dataclass
class ShiftedClock:
    """The system clock moved ``offset`` ahead: a test advances time without sleeping."""

    offset: dt.timedelta = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return utcnow() + self.offset

    def advance(self, by: dt.timedelta) -> None:
        self.offset += by


# -- a connector that records what the API asked ---------------------------------------------


@dataclass
class RecordingConnector:
    """A ``MailboxConnector`` that records each call and answers from ``mailboxes`` (each
    with the account it belongs to)."""

    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    mailboxes: dict[str, tuple[str, MailboxView]] = field(default_factory=dict)
    callback: CallbackResult = field(
        default_factory=lambda: CallbackResult("connected", "The mailbox is connected.", None, None)
    )

    def add(self, account_id: str, state: str = "pending_consent") -> MailboxView:
        now = dt.datetime.now(dt.UTC)
        mailbox = MailboxView(
            id=new_id("mbx"),
            provider="microsoft",
            capabilities=("send",),
            address=None,
            state=MailboxState(state),
            state_reason=None,
            granted_scopes=(),
            created_at=now,
            updated_at=now,
        )
        self.mailboxes[mailbox.id] = (account_id, mailbox)
        return mailbox

    def _find(self, principal: Principal, mailbox_id: str) -> MailboxView:
        account_id, mailbox = self.mailboxes.get(mailbox_id, ("", None))
        if mailbox is None or account_id != principal.account_id:
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

    async def get(self, principal: Principal, mailbox_id: str) -> MailboxView:
        self.calls.append(("get", (mailbox_id,)))
        return self._find(principal, mailbox_id)

    async def list(
        self,
        principal: Principal,
        *,
        limit: int | None = None,
        after: tuple[dt.datetime, str] | None = None,
        include_disconnected: bool = True,
    ) -> list[MailboxView]:
        self.calls.append(("list", (limit, after, include_disconnected)))
        listed = sorted(
            (m for a, m in self.mailboxes.values() if a == principal.account_id),
            key=lambda mailbox: (mailbox.created_at, mailbox.id),
        )
        listed = [
            mailbox
            for mailbox in listed
            if (include_disconnected or mailbox.state != MailboxState.DISCONNECTED)
            and (after is None or (mailbox.created_at, mailbox.id) > after)
        ]
        return listed if limit is None else listed[:limit]

    async def held_job_counts(self, principal: Principal) -> Mapping[str, int]:
        self.calls.append(("held_job_counts", ()))
        return {}

    async def disconnect(self, principal: Principal, mailbox_id: str) -> MailboxView:
        self.calls.append(("disconnect", (mailbox_id,)))
        mailbox = dataclasses.replace(
            self._find(principal, mailbox_id), state=MailboxState.DISCONNECTED
        )
        self.mailboxes[mailbox_id] = (principal.account_id, mailbox)
        return mailbox

    async def set_limits(
        self, principal: Principal, mailbox_id: str, limits: Mapping[str, int | None]
    ) -> MailboxView:
        self.calls.append(("set_limits", (mailbox_id, dict(limits))))
        mailbox = self._find(principal, mailbox_id)
        changed = dataclasses.replace(mailbox, limits=dataclasses.replace(mailbox.limits, **limits))
        self.mailboxes[mailbox_id] = (principal.account_id, changed)
        return changed

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

    @property
    def body_but_request_id(self) -> bytes:
        """The body with its request id blanked: each answer has one of its own."""
        return re.sub(rb'"request_id": "[^"]*"', b'"request_id": ""', self.body)


@dataclass
class RunningApi:
    base_url: str
    app: App
    clock: ShiftedClock
    engine: AsyncEngine
    accounts: AccountStore
    mailboxes: MailboxStore
    jobs: JobStore
    queue: JobQueue
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


@contextlib.asynccontextmanager
async def running_api(
    tmp_path: Path,
    *,
    connector: Callable[[MailboxService], MailboxConnector] | None = None,
    ready: Callable[[], Any] | None = None,
    limits: ServerLimits | None = None,
    body_timeout: float = 60.0,
    rate_limits: RateLimitSettings | None = None,
) -> AsyncIterator[RunningApi]:
    """The API on a real socket over a fresh, migrated SQLite database.

    ``connector`` may replace the real mailbox service (it receives it, to wrap or ignore);
    ``ready`` may replace the readiness checks; ``rate_limits`` the ``[api]`` defaults.
    """
    settings = Settings(
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path}/t.db"),
        server=ServerSettings(
            public_url=PUBLIC_URL, max_request_bytes=MAX_REQUEST_BYTES, body_timeout=body_timeout
        ),
        keys=KeySettings(source="file", file=str(tmp_path / "keys.json"), create_if_missing=True),
        api=rate_limits or RateLimitSettings(),
    )
    identity = FakeMicrosoftIdentity()
    clock = ShiftedClock()
    app = App.build(
        settings,
        identities={"microsoft": identity},
        providers={"microsoft": IdleProvider()},
        clock=clock,
    )
    try:
        await app.migrate()
        chosen: MailboxConnector = (
            app.mailbox_service if connector is None else connector(app.mailbox_service)
        )
        # The browser's own origin stands for the daemon's (``public_url`` empty), as the
        # admin page and cookies see a server on an ephemeral port.
        services = dataclasses.replace(
            app.api_services(),
            mailboxes=chosen,
            ready=ready or app.readiness,
            public_url="",
        )
        runner, site = await start_server(
            create_app(services), "127.0.0.1", 0, limits or ServerLimits()
        )
        try:
            base_url = f"http://127.0.0.1:{site.port}"
            async with aiohttp.ClientSession(base_url=base_url) as http:
                yield RunningApi(
                    base_url=base_url,
                    app=app,
                    clock=clock,
                    engine=app.engine,
                    accounts=app.accounts,
                    mailboxes=app.mailboxes,
                    jobs=app.jobs,
                    queue=app.queue,
                    registry=app.registry,
                    connector=chosen,
                    identity=identity,
                    http=http,
                )
        finally:
            await runner.cleanup()
    finally:
        await app.close()


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
