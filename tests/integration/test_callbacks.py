"""Outbox events reach the invoicing app's callback URL, signed, retried until acknowledged."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import update

from mailbox_worker.config import CallbackSettings
from mailbox_worker.db.models import OutboxEvent
from mailbox_worker.events.delivery import CallbackDispatcher
from mailbox_worker.events.outbox import Outbox

from .conftest import Stores

SECRET = "callback-signing-secret"


class App:
    def __init__(self) -> None:
        self.received: list[tuple[bytes, str]] = []
        self.answers = [500, 200]

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((await request.read(), request.headers["X-Mailbox-Worker-Signature"]))
        return web.Response(status=self.answers.pop(0) if self.answers else 200)


@pytest.fixture
async def invoicing_app() -> AsyncIterator[tuple[App, str]]:
    app = App()
    application = web.Application()
    application.router.add_post("/events", app.handle)
    server = TestServer(application, host="127.0.0.1")
    await server.start_server()
    yield app, str(server.make_url("/events"))
    await server.close()


async def test_events_are_signed_retried_and_delivered_once(
    stores: Stores, invoicing_app: tuple[App, str]
) -> None:
    app, url = invoicing_app
    outbox = Outbox(stores.sessions)
    await outbox.add("acc_1", "mailbox.reauth_required", {"mailbox_id": "mbx_1", "reason": "x"})
    dispatcher = CallbackDispatcher(
        outbox, CallbackSettings(url=url, secret=SECRET, retry_initial=0.01)
    )
    assert await dispatcher.deliver_due() == 0  # the app answered 500
    [event] = await outbox.all()
    assert (event.attempts, event.delivered_at) == (1, None)
    async with stores.sessions.begin() as session:
        await session.execute(update(OutboxEvent).values(next_attempt_at=dt.datetime.now(dt.UTC)))
    assert await dispatcher.deliver_due() == 1
    assert await dispatcher.deliver_due() == 0  # nothing due any more
    assert len(app.received) == 2
    body, signature = app.received[-1]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert signature == expected
    document = json.loads(body)
    assert (document["type"], document["account_id"], document["data"]["mailbox_id"]) == (
        "mailbox.reauth_required",
        "acc_1",
        "mbx_1",
    )
    [event] = await outbox.all()
    assert event.delivered_at is not None
