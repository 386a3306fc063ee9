"""The daemon ``App.build`` wires sends only to the endpoints its settings name
(docs/privacy.md PP-5): providers, identity platforms and the callback URL are gated."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mailbox_worker.app import App, egress_policy
from mailbox_worker.config import CallbackSettings, DatabaseSettings, Settings
from mailbox_worker.demo import demo_settings
from mailbox_worker.errors import ConfigError, PolicyViolation
from mailbox_worker.policy.egress import origin
from mailbox_worker.sandbox import Sandbox

from .test_egress_gate import Listener

VIOLATIONS = "mailbox_worker_policy_violations_total"


@pytest.fixture
async def invoicing_app() -> AsyncIterator[tuple[list[bytes], str]]:
    """The invoicing app's callback endpoint, recording what it receives."""
    received: list[bytes] = []

    async def events(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=204)

    application = web.Application()
    application.router.add_post("/events", events)
    server = TestServer(application, host="127.0.0.1")
    await server.start_server()
    yield received, str(server.make_url("/events"))
    await server.close()


@pytest.fixture
async def forbidden() -> AsyncIterator[tuple[Listener, str]]:
    listener = Listener()
    url = await listener.start()
    yield listener, url
    await listener.stop()


@pytest.fixture
async def app(
    migrated_database_url: str, tmp_path: Path, invoicing_app: tuple[list[bytes], str]
) -> AsyncIterator[App]:
    """The daemon over the sandbox, with a callback URL, built by the composition root."""
    sandbox = Sandbox(tmp_path / "sandbox")
    await sandbox.start()
    settings = dataclasses.replace(
        demo_settings(tmp_path, sandbox, 8080),
        database=DatabaseSettings(url=migrated_database_url),
        callbacks=CallbackSettings(url=invoicing_app[1], secret="s", retry_initial=0.01),
    )
    built = App.build(settings)
    await built.migrate()
    try:
        yield built
    finally:
        await built.close()
        await sandbox.stop()


def violations(app: App) -> float:
    return app.registry.get_sample_value(VIOLATIONS, {"rule": "egress_allow_list"}) or 0.0


async def test_provider_sessions_reach_only_their_apis(
    app: App, forbidden: tuple[Listener, str]
) -> None:
    listener, elsewhere = forbidden
    for name in ("microsoft", "google"):
        # The session the provider sends through, as it opens it on first use.
        session = app.providers[name]._open_session()  # type: ignore[attr-defined]
        with pytest.raises(PolicyViolation, match="egress_not_allowed"):
            await session.put(f"{elsewhere}/upload?authtoken=secret", data=b"%PDF")
    assert listener.connections == 0
    assert violations(app) == 2


async def test_identity_clients_reach_only_their_platforms(
    app: App, forbidden: tuple[Listener, str]
) -> None:
    listener, elsewhere = forbidden
    microsoft = app.identities["microsoft"]
    # msal finds the authority's OpenID configuration and builds a flow: allowed.
    flow = await asyncio.to_thread(
        microsoft.start, ["https://graph.microsoft.com/Mail.Send"], "http://127.0.0.1/cb", None
    )
    assert origin(flow["auth_uri"]) == origin(app.settings.microsoft.authority)
    for name in ("microsoft", "google"):
        http = app.identities[name]._http  # type: ignore[attr-defined]
        with pytest.raises(PolicyViolation, match="egress_not_allowed"):
            await asyncio.to_thread(http.post, f"{elsewhere}/token", data={"code": "c"})
    assert listener.connections == 0
    assert violations(app) == 2


async def test_callbacks_go_to_the_configured_url_only(
    app: App, invoicing_app: tuple[list[bytes], str], forbidden: tuple[Listener, str]
) -> None:
    received, _ = invoicing_app
    listener, elsewhere = forbidden
    await app.outbox.add("acc_1", "mailbox.connected", {"mailbox_id": "mbx_1"})
    assert await app.callback_dispatcher().deliver_due() == 1
    assert len(received) == 1

    # A dispatcher made to post elsewhere (the policy was fixed when the app was built).
    await app.outbox.add("acc_1", "mailbox.connected", {"mailbox_id": "mbx_2"})
    app.settings = dataclasses.replace(
        app.settings, callbacks=dataclasses.replace(app.settings.callbacks, url=elsewhere)
    )
    assert await app.callback_dispatcher().deliver_due() == 0
    assert listener.connections == 0
    assert violations(app) == 1


def test_an_endpoint_that_cannot_be_allowed_stops_the_build() -> None:
    settings = Settings(callbacks=CallbackSettings(url="http://invoicing.example/events"))
    with pytest.raises(ConfigError, match=r"callbacks\.url"):
        egress_policy(settings)


def test_graph_uploads_are_allowed_to_their_host() -> None:
    policy = egress_policy(Settings())
    assert policy.allows("https://outlook.office.com/api/v2.0/Users('x')/AttachmentSessions('y')")
    assert policy.allows("https://login.microsoftonline.com/organizations/oauth2/v2.0/token")
    assert not policy.allows("https://graph.windows.net/")
