"""Events written by real transitions reach the app as the OpenAPI ``webhooks`` describe them:
each body valid against its type's schema, its signature verifying, its headers naming it.
Between them the two delivery tests drive every ``EventType`` through the code that emits it."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mailbox_worker.api.document import ApiDocument
from mailbox_worker.config import CallbackSettings
from mailbox_worker.errors import ValidationFailed
from mailbox_worker.events.delivery import CallbackDispatcher
from mailbox_worker.events.outbox import Outbox
from mailbox_worker.events.signing import Check, verify
from mailbox_worker.jobs.store import NewJob
from mailbox_worker.jobs.transitions import RESOLVE, Outcome
from mailbox_worker.states import JobState

from .conftest import Stores
from .oauth_world import ADDRESS, World

SECRET = "contract-secret"
LEASE = dt.timedelta(seconds=60)
DOCUMENT = ApiDocument.packaged()


class Receiver:
    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    app = Receiver()
    application = web.Application()
    application.router.add_post("/events", app.handle)
    server = TestServer(application, host="127.0.0.1")
    await server.start_server()
    yield app, str(server.make_url("/events"))
    await server.close()


def new_job(account_id: str, mailbox_id: str, name: str, *, held: bool = False) -> NewJob:
    return NewJob(
        account_id=account_id,
        mailbox_id=mailbox_id,
        mode="send",
        payload={"to": [{"address": "ap@fabrikam.example"}], "subject": name, "text": "hi"},
        request_sha256=name,
        message_id_domain="contoso.example",
        reference=f"INV-{name}",
        held=held,
    )


async def emit_real_events(stores: Stores) -> None:
    """Job and mailbox events, each written by the store operation that emits it for real."""
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    outcomes = [
        Outcome(JobState.SENT, provider_message_id="AAMk-1"),
        Outcome(JobState.DRAFTED, provider_message_id="AAMk-2", provider_draft_id="AAMk-2"),
        Outcome(JobState.FAILED, "invalid_recipients", "Graph refused: HTTP 400"),
        Outcome(JobState.UNKNOWN, "provider_error_ambiguous", "HTTP 500"),
    ]
    for number, outcome in enumerate(outcomes):
        job, _ = await stores.jobs.enqueue(new_job(account.id, mailbox.id, f"job {number}"))
        [claimed] = await stores.queue.claim("w1", 1, LEASE)
        assert claimed.job.id == job.id and await stores.queue.start_attempt(claimed.lease)
        assert await stores.queue.finish(claimed.lease, outcome)
        if outcome.state == JobState.UNKNOWN:
            assert await stores.jobs.settle_unknown(job.id, RESOLVE, actor="key_1") is not None
    cancelled, _ = await stores.jobs.enqueue(new_job(account.id, mailbox.id, "cancelled"))
    assert await stores.jobs.cancel(cancelled.id, account.id, actor="key_1")
    assert await stores.mailboxes.require_consent_again(mailbox, "invalid_grant", actor="w1")
    await stores.jobs.enqueue(new_job(account.id, mailbox.id, "held", held=True))


async def deliver_and_check(outbox: Outbox, app: Receiver, url: str) -> set[str]:
    """Deliver every waiting event to ``app``; check each POST against the document and the
    verifier; return the types received."""
    dispatcher = CallbackDispatcher(outbox, CallbackSettings(url=url, secret=SECRET))
    while await dispatcher.deliver_due():  # one event a job or mailbox at a time
        pass
    seen_types = set()
    for headers, body in app.received:
        event_type = headers["X-Mailbox-Worker-Event-Type"]
        signature = headers["X-Mailbox-Worker-Signature"]
        assert verify(signature, body, SECRET, now=time.time()) == Check.VALID
        envelope = json.loads(body)
        assert (envelope["id"], envelope["type"]) == (
            headers["X-Mailbox-Worker-Event-Id"],
            event_type,
        )
        pointer = f"/webhooks/{event_type}/post/requestBody/content/application~1json/schema"
        DOCUMENT.validate(pointer, envelope)  # raises ValidationFailed when it does not match
        DOCUMENT.validate("/components/schemas/WebhookEnvelope", envelope)
        seen_types.add(event_type)
    return seen_types


async def test_real_events_match_their_webhook_schema_and_verify(
    stores: Stores, receiver: tuple[Receiver, str]
) -> None:
    app, url = receiver
    await emit_real_events(stores)
    outbox = Outbox(stores.sessions)
    written = await outbox.all()
    seen_types = await deliver_and_check(outbox, app, url)
    assert len(app.received) == len(written)
    assert seen_types == {
        "job.sent",
        "job.drafted",
        "job.failed",
        "job.unknown",
        "job.settled",
        "job.cancelled",
        "job.held",
        "mailbox.reauth_required",
    }
    assert {envelope_id(body) for _, body in app.received} == {e.public_id for e in written}


async def test_connect_and_disconnect_events_match_their_webhook_schema(
    world: World, receiver: tuple[Receiver, str]
) -> None:
    """The mailbox events the connect flow writes (the real MailboxService and sandbox)."""
    app, url = receiver
    service = world.app.mailbox_service
    start = await service.create(world.principal, "microsoft", ["send"], None, ADDRESS)
    await service.complete(await world.consent(start.authorization_url))
    await service.disconnect(world.principal, start.mailbox.id)
    seen = await deliver_and_check(world.app.outbox, app, url)
    assert seen == {"mailbox.connected", "mailbox.disconnected"}


def envelope_id(body: bytes) -> str:
    value: str = json.loads(body)["id"]
    return value


async def test_a_body_the_document_refuses_is_caught(stores: Stores) -> None:
    """The validation above can fail: a job event whose data lacks its state is refused."""
    await emit_real_events(stores)
    [event, *_] = await Outbox(stores.sessions).all()
    envelope = {
        "id": event.public_id,
        "type": event.kind,
        "account_id": event.account_id,
        "created_at": "2026-12-05T20:30:00Z",
        "data": {key: value for key, value in event.payload.items() if key != "state"},
    }
    pointer = f"/webhooks/{event.kind}/post/requestBody/content/application~1json/schema"
    with pytest.raises(ValidationFailed) as failure:
        DOCUMENT.validate(pointer, envelope)
    assert "state" in json.dumps(failure.value.details)
