"""The worker never sends on a lease it lost or let expire (issue 8): a task whose lease was
recovered while it waited (here on a blocked token source) cannot send once the job is
claimed again, a task whose lease expired (it could not be renewed in time) does not send,
and the worker renews its own leases before it recovers expired ones. Both databases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry

from mailbox_worker.db.models import Job, Mailbox
from mailbox_worker.jobs.store import NewJob
from mailbox_worker.jobs.worker import Worker
from mailbox_worker.prometheus import PrometheusTelemetry

from .conftest import Stores, expire_leases
from .test_worker import FAST, RecordingProvider, RecordingTokens


@dataclass
class GatedTokens(RecordingTokens):
    """The first ``gated`` requests wait at ``gate`` (a token refresh that hangs)."""

    gated: int = 1
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: asyncio.Event = field(default_factory=asyncio.Event)

    async def get(self, mailbox: Mailbox, *, force_refresh: bool = False) -> str:
        if self.gated > 0:
            self.gated -= 1
            self.waiting.set()
            await self.gate.wait()
        return await super().get(mailbox, force_refresh=force_refresh)


@dataclass
class Setup:
    stores: Stores
    worker: Worker
    tokens: GatedTokens
    provider: RecordingProvider
    job: Job

    def task(self) -> asyncio.Task[object]:
        """The worker's task for the job now."""
        [task] = [t for t in asyncio.all_tasks() if t.get_name() == f"job-{self.job.id}"]
        return task

    async def attempts(self) -> list[str | None]:
        return [e.worker for e in await self.stores.jobs.events(self.job.id) if e.kind == "attempt"]


@pytest.fixture
async def setup(stores: Stores) -> AsyncIterator[Setup]:
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    tokens, provider = GatedTokens(), RecordingProvider()
    worker = Worker(
        stores.queue,
        stores.mailboxes,
        tokens,
        {"microsoft": provider},
        FAST,
        PrometheusTelemetry(CollectorRegistry()),
        "w1",
    )
    payload = {"to": [{"address": "ap@fabrikam.example"}], "subject": "s", "text": "t"}
    job, _ = await stores.jobs.enqueue(
        NewJob(account.id, mailbox.id, "send", payload, "h", "contoso.example")
    )
    setup = Setup(stores, worker, tokens, provider, job)
    yield setup
    setup.tokens.gate.set()
    async with asyncio.timeout(20):  # a hang guard, not a performance assertion
        await worker.run_until_idle()


async def test_a_stale_task_cannot_send_when_its_job_is_claimed_again(setup: Setup) -> None:
    assert await setup.worker.run_once() == 1
    await setup.tokens.waiting.wait()
    stale = setup.task()
    # Its lease ran out while it waited and another process's housekeeping requeued the job.
    await expire_leases(setup.stores.sessions)
    assert await setup.stores.queue.recover_expired_leases() == (1, 0)

    assert await setup.worker.run_once() == 1  # the same worker claims the job again
    setup.tokens.gate.set()
    async with asyncio.timeout(20):  # a hang guard, not a performance assertion
        await asyncio.wait([stale])
        await setup.worker.run_until_idle()

    stored = await setup.stores.jobs.get(setup.job.id)
    assert stored is not None
    assert (stored.state, stored.attempts) == ("sent", 1)
    assert len(setup.provider.calls) == 1
    assert await setup.attempts() == ["w1"]


async def test_a_task_whose_lease_expired_does_not_send(setup: Setup) -> None:
    assert await setup.worker.run_once() == 1
    await setup.tokens.waiting.wait()
    task = setup.task()
    await expire_leases(setup.stores.sessions)  # not renewed in time: the database was slow
    setup.tokens.gate.set()
    async with asyncio.timeout(20):  # a hang guard, not a performance assertion
        await asyncio.wait([task])

    assert setup.provider.calls == []
    stored = await setup.stores.jobs.get(setup.job.id)
    assert stored is not None
    assert (stored.state, stored.attempts, stored.in_flight_since) == ("running", 0, None)
    assert await setup.attempts() == []

    # Recovery requeues it (nothing was in flight) and it is sent once.
    async with asyncio.timeout(20):
        await setup.worker.run_until_idle()
    stored = await setup.stores.jobs.get(setup.job.id)
    assert stored is not None
    assert (stored.state, stored.attempts, stored.last_error_code) == ("sent", 1, None)
    assert len(setup.provider.calls) == 1


async def test_the_worker_renews_its_own_leases_before_it_recovers(setup: Setup) -> None:
    assert await setup.worker.run_once() == 1
    await setup.tokens.waiting.wait()
    await expire_leases(setup.stores.sessions)
    idle = asyncio.create_task(setup.worker.run_until_idle())  # housekeeping comes first

    async def renewed() -> bool:
        recovered = await setup.stores.queue.count_by_state()
        assert recovered["running"] == 1  # never requeued by its own worker
        stored = await setup.stores.jobs.get(setup.job.id)
        expires = stored.lease_expires_at if stored is not None else None
        return expires is not None and expires > setup.job.created_at

    async with asyncio.timeout(20):  # a hang guard, not a performance assertion
        while not await renewed():
            await asyncio.sleep(0.01)
        setup.tokens.gate.set()
        await idle

    stored = await setup.stores.jobs.get(setup.job.id)
    assert stored is not None
    assert (stored.state, stored.attempts) == ("sent", 1)
    codes = [e.code for e in await setup.stores.jobs.events(setup.job.id)]
    assert "lease_expired" not in codes
