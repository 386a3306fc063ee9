"""Outbox events reach the invoicing app's callback URL, signed, retried until acknowledged."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailbox_worker.config import CallbackSettings, DatabaseSettings
from mailbox_worker.db.engine import create_engine, create_session_factory
from mailbox_worker.db.models import OutboxEvent
from mailbox_worker.events import delivery
from mailbox_worker.events.delivery import CallbackDispatcher
from mailbox_worker.events.outbox import Outbox
from mailbox_worker.events.signing import Check, verify

from .conftest import Stores

SECRET = "callback-signing-secret"


class App:
    def __init__(self) -> None:
        self.received: list[tuple[bytes, str]] = []
        self.headers: list[dict[str, str]] = []
        self.answers = [500, 200]
        self.delay = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((await request.read(), request.headers["X-Mailbox-Worker-Signature"]))
        self.headers.append(dict(request.headers))
        await asyncio.sleep(self.delay)  # lets the other delivery loop run meanwhile
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
    # The receiver's own clock: the signature's t is the time of the attempt.
    assert verify(signature, body, SECRET, now=time.time()) == Check.VALID
    assert verify(signature, body, "another-secret", now=time.time()) == Check.MISMATCH
    document = json.loads(body)
    assert (document["type"], document["account_id"], document["data"]["mailbox_id"]) == (
        "mailbox.reauth_required",
        "acc_1",
        "mbx_1",
    )
    [event] = await outbox.all()
    assert event.delivered_at is not None
    assert document["id"] == event.public_id and event.public_id.startswith("evt_")
    headers = app.headers[-1]
    assert headers["X-Mailbox-Worker-Event-Id"] == event.public_id
    assert headers["X-Mailbox-Worker-Event-Type"] == "mailbox.reauth_required"
    first_body, _ = app.received[0]
    assert first_body == body  # a retry sends the same envelope, the same id


async def test_each_attempt_is_signed_at_its_own_time(
    stores: Stores, invoicing_app: tuple[App, str]
) -> None:
    """A retry an hour later is signed anew, so the receiver's tolerance window accepts it."""
    app, url = invoicing_app
    outbox = Outbox(stores.sessions)
    await outbox.add("acc_1", "mailbox.connected", {"mailbox_id": "mbx_1", "provider": "google"})
    times = [dt.datetime(2026, 12, 5, 20, 0, tzinfo=dt.UTC)]
    dispatcher = CallbackDispatcher(
        outbox,
        CallbackSettings(url=url, secret=SECRET, retry_initial=0.01),
        clock=lambda: times[-1],
    )
    assert await dispatcher.deliver_due() == 0  # the app answered 500
    times.append(times[0] + dt.timedelta(hours=1))
    async with stores.sessions.begin() as session:
        await session.execute(update(OutboxEvent).values(next_attempt_at=dt.datetime.now(dt.UTC)))
    assert await dispatcher.deliver_due() == 1
    (first_body, first), (second_body, second) = app.received
    assert first_body == second_body
    signed_at = [moment.timestamp() for moment in times]
    assert verify(first, first_body, SECRET, now=signed_at[0]) == Check.VALID
    assert verify(second, second_body, SECRET, now=signed_at[1]) == Check.VALID
    # Replaying the first POST at the time of the second is refused by the receiver.
    assert verify(first, first_body, SECRET, now=signed_at[1]) == Check.OUTSIDE_TOLERANCE


def posted_ids(app: App) -> list[str]:
    return [json.loads(body)["id"] for body, _ in app.received]


async def test_a_jobs_next_event_waits_until_its_failed_event_is_acknowledged(
    stores: Stores, invoicing_app: tuple[App, str]
) -> None:
    app, url = invoicing_app
    app.answers = [500]  # the first POST fails, every later one is acknowledged
    outbox = Outbox(stores.sessions)
    await outbox.add("acc_1", "job.held", {"job_id": "job_a", "mailbox_id": "mbx_1"})
    await outbox.add("acc_1", "job.cancelled", {"job_id": "job_a", "mailbox_id": "mbx_1"})
    await outbox.add("acc_1", "job.sent", {"job_id": "job_b", "mailbox_id": "mbx_1"})
    held, cancelled, other = (event.public_id for event in await outbox.all())
    dispatcher = CallbackDispatcher(
        outbox, CallbackSettings(url=url, secret=SECRET, retry_initial=0.01)
    )
    assert await dispatcher.deliver_due() == 1  # job_b's event; job_a's second waits
    assert posted_ids(app) == [held, other]
    async with stores.sessions.begin() as session:
        await session.execute(update(OutboxEvent).values(next_attempt_at=dt.datetime.now(dt.UTC)))
    assert await dispatcher.deliver_due() == 1  # the retried first event of job_a
    assert await dispatcher.deliver_due() == 1  # only now its second
    assert posted_ids(app) == [held, other, held, cancelled]
    assert all(event.delivered_at is not None for event in await outbox.all())


@pytest.fixture
async def other_sessions(
    migrated_database_url: str,
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions of a second process on the test database."""
    engine = create_engine(DatabaseSettings(url=migrated_database_url))
    yield create_session_factory(engine)
    await engine.dispose()


async def test_another_process_does_not_deliver_a_jobs_event_while_an_older_one_is_leased(
    stores: Stores,
    other_sessions: async_sessionmaker[AsyncSession],
    invoicing_app: tuple[App, str],
) -> None:
    app, url = invoicing_app
    app.answers = []
    first, second = Outbox(stores.sessions), Outbox(other_sessions)
    await first.add("acc_1", "job.held", {"job_id": "job_a", "mailbox_id": "mbx_1"})
    await first.add("acc_1", "job.cancelled", {"job_id": "job_a", "mailbox_id": "mbx_1"})
    await first.add("acc_1", "mailbox.disconnected", {"mailbox_id": "mbx_2"})
    held, cancelled, other = (event.public_id for event in await first.all())
    [leased] = await first.claim(1, dt.timedelta(minutes=5))  # being POSTed by the first
    assert leased.public_id == held
    second_loop = CallbackDispatcher(second, CallbackSettings(url=url, secret=SECRET))
    assert await second_loop.deliver_due() == 1
    assert posted_ids(app) == [other]
    await first.delivered(leased.id)  # the first process's POST was acknowledged
    assert await second_loop.deliver_due() == 1
    assert posted_ids(app) == [other, cancelled]


async def test_two_delivery_loops_deliver_each_event_once_and_in_order_per_job(
    stores: Stores,
    other_sessions: async_sessionmaker[AsyncSession],
    invoicing_app: tuple[App, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, url = invoicing_app
    app.answers, app.delay = [], 0.005
    monkeypatch.setattr(delivery, "BATCH", 3)  # small batches, so both loops take some
    first = Outbox(stores.sessions)
    for round_number in range(4):
        for job_number in range(5):
            payload = {"job_id": f"job_{job_number}", "mailbox_id": "mbx_1", "n": round_number}
            await first.add("acc_1", "job.held", payload)
        await first.add("acc_1", "mailbox.reauth_required", {"mailbox_id": f"mbx_{round_number}"})
    events = await first.all()
    settings = CallbackSettings(url=url, secret=SECRET)
    dispatchers = [
        CallbackDispatcher(first, settings),
        CallbackDispatcher(Outbox(other_sessions), settings),
    ]
    for _ in range(20):  # each pass of both delivers at least one waiting event of each key
        await asyncio.gather(*(dispatcher.deliver_due() for dispatcher in dispatchers))
    position = {event.public_id: event.id for event in events}  # the internal id orders them
    received = [position[public_id] for public_id in posted_ids(app)]
    assert sorted(received) == [event.id for event in events]  # each once
    keys = {event.id: event.ordering_key for event in events}
    for key in {event.ordering_key for event in events}:
        of_key = [event_id for event_id in received if keys[event_id] == key]
        assert of_key == sorted(of_key), key
    assert all(event.delivered_at is not None for event in await first.all())
