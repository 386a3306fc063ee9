"""A database that goes away and comes back (issue 8, item 2): the API answers
``503 database_unavailable`` meanwhile, ``/readyz`` says not ready, the worker's loop
survives the outage and processes work once the database returns, and an outcome the
database could not take is kept and written when it returns (the job ends ``sent``, not
``unknown``).

The outage is a TCP relay to the test's own PostgreSQL database that the test cuts (closing
every relayed connection and refusing new ones) and restores on the same port; the machine's
PostgreSQL server itself is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import make_url

from mailbox_worker.app import App
from mailbox_worker.config import DatabaseSettings, KeySettings, Settings
from mailbox_worker.db.engine import create_engine, create_session_factory
from mailbox_worker.db.mailboxes import MailboxStore
from mailbox_worker.errors import DatabaseUnavailable
from mailbox_worker.jobs.queue import JobQueue
from mailbox_worker.jobs.store import JobStore, NewJob
from mailbox_worker.jobs.worker import Worker
from mailbox_worker.prometheus import PrometheusTelemetry
from mailbox_worker.providers.base import (
    UNTRACKED,
    DeliveryProgress,
    DeliveryReceipt,
    OutgoingMessage,
)

from .api_harness import IdleProvider
from .test_worker import FAST, Harness, RecordingProvider, RecordingTokens

pytestmark = pytest.mark.postgres


class Relay:
    """Relays TCP connections from a local port to ``host:port`` until cut."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._relay, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop every open one."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()
        self._server = None

    async def _relay(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        try:
            server_reader, server = await asyncio.open_connection(*self._target)
        except OSError:
            client.transport.abort()
            return
        self._writers.update((client, server))
        await asyncio.gather(self._pipe(client_reader, server), self._pipe(server_reader, client))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self._writers.discard(writer)


@pytest.fixture
async def relay(migrated_database_url: str) -> AsyncIterator[tuple[Relay, str]]:
    """A relay to the test's PostgreSQL database and the database URL through it."""
    url = make_url(migrated_database_url)
    relay = Relay(url.host or "127.0.0.1", url.port or 5432)
    await relay.start()
    relayed = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    yield relay, relayed
    with contextlib.suppress(AssertionError):
        await relay.cut()


@pytest.fixture
def migrated_database_url(request: pytest.FixtureRequest) -> str:
    # PostgreSQL only: the relay speaks TCP. (Overrides the two-backend fixture.)
    return str(request.getfixturevalue("postgres_database_url"))


@pytest.fixture
async def postgres_database_url(postgres_template: str) -> AsyncIterator[str]:
    from tests.conftest import create_postgres_database, drop_postgres_database

    url = await create_postgres_database(template=postgres_template)
    try:
        yield url
    finally:
        await drop_postgres_database(url)


async def poll(condition: Callable[[], Awaitable[bool]]) -> None:
    """Wait until ``condition()`` is true (bounded: a hang guard, not a timing assertion)."""
    async with asyncio.timeout(15):
        while not await condition():
            await asyncio.sleep(0.02)


async def test_the_api_answers_503_while_the_database_is_away_and_2xx_after(
    relay: tuple[Relay, str], tmp_path: Path
) -> None:
    proxy, url = relay
    settings = Settings(
        database=DatabaseSettings(url=url),
        keys=KeySettings(source="file", file=str(tmp_path / "keys.json"), create_if_missing=True),
    )
    app = App.build(settings, providers={"microsoft": IdleProvider()})
    from aiohttp.test_utils import TestClient, TestServer

    try:
        account = await app.accounts.create_account("acme")
        key = (
            await app.accounts.create_api_key(account.id, "t", frozenset({"mailboxes:read"}))
        ).secret
        async with TestClient(TestServer(app.web_app())) as client:

            async def get(path: str) -> tuple[int, dict[str, object], str | None]:
                headers = {"Authorization": f"Bearer {key}"}
                async with client.get(path, headers=headers) as answer:
                    return answer.status, await answer.json(), answer.headers.get("Retry-After")

            assert (await get("/v1/mailboxes"))[0] == 200
            assert (await get("/readyz"))[0] == 200

            await proxy.cut()
            status, body, retry_after = await get("/v1/mailboxes")
            assert (status, body["error"]["code"]) == (503, "database_unavailable")  # type: ignore[index]
            assert retry_after is not None and int(retry_after) > 0
            assert (await get("/readyz"))[0] == 503

            await proxy.start()
            assert (await get("/v1/mailboxes"))[0] == 200
            assert (await get("/readyz"))[0] == 200

            # A background loop that ended makes the daemon not ready.
            ended = asyncio.create_task(asyncio.sleep(0))
            await ended
            app.loops = {"worker": ended}
            status, body, _ = await get("/readyz")
            assert (status, body["checks"]["worker_loop"]) == (503, False)  # type: ignore[index]
            running = asyncio.create_task(asyncio.sleep(3600))
            app.loops = {"worker": running}
            assert (await get("/readyz"))[0] == 200
            running.cancel()
    finally:
        await app.close()


async def test_the_worker_loop_survives_an_outage_and_works_after(
    relay: tuple[Relay, str],
) -> None:
    proxy, url = relay
    engine = create_engine(DatabaseSettings(url=url))
    sessions = create_session_factory(engine)
    from mailbox_worker.db.accounts import AccountStore
    from mailbox_worker.db.erasure import StorageScrubber

    from .conftest import Stores

    stores = Stores(
        engine,
        sessions,
        AccountStore(sessions),
        MailboxStore(sessions),
        JobStore(sessions),
        JobQueue(sessions),
        StorageScrubber(engine),
    )
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    registry = CollectorRegistry()
    provider = RecordingProvider()
    worker = Worker(
        stores.queue,
        stores.mailboxes,
        RecordingTokens(),
        {"microsoft": provider},
        FAST,
        PrometheusTelemetry(registry),
        "w1",
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    harness = Harness(stores, provider, RecordingTokens(), worker, mailbox, stop, running)
    try:
        await harness.settled(await harness.enqueue())

        await proxy.cut()

        async def errors_counted() -> bool:
            value = registry.get_sample_value(
                "mailbox_worker_loop_errors_total", {"loop": "worker"}
            )
            return (value or 0) >= 2

        await poll(errors_counted)
        assert not running.done()

        await proxy.start()
        job = await harness.settled(await harness.enqueue(subject="After the outage"))
        assert job.state == "sent"
        assert not running.done()
    finally:
        await harness.pause()
        await engine.dispose()


@dataclass
class CuttingProvider(RecordingProvider):
    """Accepts the message, then the database goes away before the outcome is written."""

    relay: Relay | None = None

    async def send(
        self,
        access_token: str,
        message: OutgoingMessage,
        *,
        progress: DeliveryProgress = UNTRACKED,
    ) -> DeliveryReceipt:
        receipt = await super().send(access_token, message, progress=progress)
        assert self.relay is not None
        await self.relay.cut()
        return receipt


async def test_an_outcome_the_database_could_not_take_is_written_when_it_returns(
    relay: tuple[Relay, str],
) -> None:
    proxy, url = relay
    engine = create_engine(DatabaseSettings(url=url))
    sessions = create_session_factory(engine)
    jobs, mailboxes = JobStore(sessions), MailboxStore(sessions)
    from mailbox_worker.db.accounts import AccountStore

    account = await AccountStore(sessions).create_account("acme")
    mailbox = await mailboxes.create(account.id, "microsoft", ["send"], actor="test")
    await mailboxes.mark_connected(mailbox.id, "billing@contoso.example", ["Mail.Send"])
    registry = CollectorRegistry()
    provider = CuttingProvider(relay=proxy)
    worker = Worker(
        JobQueue(sessions),
        mailboxes,
        RecordingTokens(),
        {"microsoft": provider},
        FAST,
        PrometheusTelemetry(registry),
        "w1",
    )
    payload = {"to": [{"address": "ap@fabrikam.example"}], "subject": "s", "text": "t"}
    job, _ = await jobs.enqueue(
        NewJob(account.id, mailbox.id, "send", payload, "h", "contoso.example")
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))

    def sample(name: str, labels: dict[str, str] | None = None) -> float:
        return registry.get_sample_value(name, labels or {}) or 0.0

    try:

        async def kept_in_memory() -> bool:
            return sample("mailbox_worker_pending_outcomes") == 1

        await poll(kept_in_memory)
        assert sample("mailbox_worker_loop_errors_total", {"loop": "outcome_write"}) >= 1

        await proxy.start()

        async def flushed() -> bool:
            return sample("mailbox_worker_outcome_flushes_total", {"result": "written"}) == 1

        await poll(flushed)
        assert sample("mailbox_worker_pending_outcomes") == 0
        stored = await jobs.get(job.id)
        assert stored is not None
        assert (stored.state, stored.attempts, stored.lease_owner) == ("sent", 1, None)
        assert len(provider.calls) == 1
    finally:
        stop.set()
        await running
        await engine.dispose()


async def test_starting_waits_for_a_database_that_comes_up_later(
    relay: tuple[Relay, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``serve`` migrates with a wait: a daemon restarted while its database is away (seen in
    the chaos soak: a kill and a database restart at once) waits instead of dying."""
    proxy, url = relay
    await proxy.cut()
    settings = Settings(
        database=DatabaseSettings(url=url),
        keys=KeySettings(source="file", file=str(tmp_path / "keys.json"), create_if_missing=True),
    )
    app = App.build(settings, providers={"microsoft": IdleProvider()})
    try:
        starting = asyncio.create_task(app.migrate(wait=60))
        async with asyncio.timeout(15):
            while "database not reachable yet" not in caplog.text:
                await asyncio.sleep(0.02)
        assert not starting.done()
        await proxy.start()
        async with asyncio.timeout(30):
            await starting
        assert (await app.readiness())["migrations"] is True
    finally:
        await app.close()


async def test_starting_gives_up_on_a_database_that_stays_away(
    relay: tuple[Relay, str], tmp_path: Path
) -> None:
    proxy, url = relay
    await proxy.cut()
    settings = Settings(
        database=DatabaseSettings(url=url),
        keys=KeySettings(source="file", file=str(tmp_path / "keys.json"), create_if_missing=True),
    )
    app = App.build(settings, providers={"microsoft": IdleProvider()})
    try:
        with pytest.raises(DatabaseUnavailable, match="within 1 seconds"):
            await app.migrate(wait=1)
    finally:
        await app.close()
