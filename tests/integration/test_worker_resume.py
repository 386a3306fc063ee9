"""A send that goes through a draft resumes from what the worker recorded: a crash after the
draft was completed sends that draft (no second draft), a crash once the send may have left
makes the job ``unknown`` (no second send). On SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Collection

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import update

from mailbox_worker.clock import utcnow
from mailbox_worker.db.models import Job
from mailbox_worker.jobs.progress import JobProgress, LeaseLost, recorded_draft
from mailbox_worker.jobs.queue import Lease, lease_owner
from mailbox_worker.jobs.store import NewJob
from mailbox_worker.jobs.worker import Worker
from mailbox_worker.prometheus import PrometheusTelemetry
from mailbox_worker.providers.base import (
    UNTRACKED,
    DeliveryMode,
    DeliveryProgress,
    DeliveryReceipt,
    OutgoingMessage,
)

from .conftest import Stores
from .test_worker import FAST, RecordingTokens

SETTINGS = dataclasses.replace(FAST, shutdown_grace=0.0)  # a stop abandons started jobs
SETTINGS_LEASE = dt.timedelta(seconds=SETTINGS.lease_seconds)


class DraftingProvider:
    """Sends the way Graph sends a large message: draft, complete it, send it; a recorded
    complete draft is sent as it is. ``stop_after`` names the step after which the first
    delivery hangs, as if its process had died there."""

    name = "microsoft"

    def __init__(self, stop_after: str) -> None:
        self.stop_after: str | None = stop_after
        self.stopped = asyncio.Event()
        self.drafts: list[str] = []
        self.sent: list[str] = []
        self.resumed_with: list[tuple[str | None, bool]] = []

    def max_message_bytes(self, mode: DeliveryMode, capabilities: Collection[str]) -> int:
        return 35 * 1024 * 1024

    async def _step(self, name: str) -> None:
        if self.stop_after == name:
            self.stop_after = None
            self.stopped.set()
            await asyncio.Event().wait()  # until the worker abandons the job

    async def send(
        self,
        access_token: str,
        message: OutgoingMessage,
        *,
        progress: DeliveryProgress = UNTRACKED,
    ) -> DeliveryReceipt:
        self.resumed_with.append((message.draft_id, message.draft_complete))
        draft_id = message.draft_id
        if draft_id is None or not message.draft_complete:
            draft_id = f"draft-{len(self.drafts) + 1}"
            self.drafts.append(draft_id)
            await progress.draft_created(draft_id)
            await progress.draft_completed(draft_id)
            await self._step("draft")
        await progress.about_to_send()
        await self._step("about_to_send")
        self.sent.append(draft_id)
        return DeliveryReceipt(state="sent", provider_draft_id=draft_id)

    async def create_draft(
        self,
        access_token: str,
        message: OutgoingMessage,
        *,
        progress: DeliveryProgress = UNTRACKED,
    ) -> DeliveryReceipt:
        raise AssertionError("these jobs are sent")

    async def close(self) -> None:
        return None


def worker(stores: Stores, provider: DraftingProvider, name: str) -> Worker:
    return Worker(
        stores.queue,
        stores.mailboxes,
        RecordingTokens(),
        {"microsoft": provider},
        SETTINGS,
        PrometheusTelemetry(CollectorRegistry()),
        name,
    )


async def crash_after(stores: Stores, provider: DraftingProvider) -> Job:
    """Enqueue a job, let a first worker deliver it until ``provider`` stops, abandon it
    there and let its lease expire; the job as that left it."""
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    payload = {"to": [{"address": "ap@fabrikam.example"}], "subject": "big", "text": "hi"}
    job, _ = await stores.jobs.enqueue(
        NewJob(account.id, mailbox.id, "send", payload, "big", "contoso.example")
    )
    first = worker(stores, provider, "w1")
    stop = asyncio.Event()
    running = asyncio.create_task(first.run(stop))
    async with asyncio.timeout(20):  # a hang guard, not a performance assertion
        await provider.stopped.wait()
        stop.set()
        await running
    async with stores.sessions.begin() as session:
        await session.execute(update(Job).values(lease_expires_at=utcnow()))
    left = await stores.jobs.get(job.id)
    assert left is not None and left.state == "running"
    return left


async def test_a_crash_after_the_draft_resumes_by_sending_that_draft(stores: Stores) -> None:
    provider = DraftingProvider(stop_after="draft")
    left = await crash_after(stores, provider)
    assert (left.provider_draft_id, left.provider_message_id) == ("draft-1", "draft-1")
    assert (left.in_flight_since, left.attempts) == (None, 0)  # nothing could have left

    async with asyncio.timeout(20):
        await worker(stores, provider, "w2").run_until_idle()

    job = await stores.jobs.get(left.id)
    assert job is not None
    assert (job.state, job.provider_draft_id, job.attempts) == ("sent", "draft-1", 1)
    assert provider.resumed_with == [(None, False), ("draft-1", True)]
    assert (provider.drafts, provider.sent) == (["draft-1"], ["draft-1"])
    codes = [event.code for event in await stores.jobs.events(job.id)]
    assert "lease_expired" in codes


async def test_a_crash_once_the_send_may_have_left_is_unknown(stores: Stores) -> None:
    provider = DraftingProvider(stop_after="about_to_send")
    left = await crash_after(stores, provider)
    assert left.in_flight_since is not None

    async with asyncio.timeout(20):
        await worker(stores, provider, "w2").run_until_idle()

    job = await stores.jobs.get(left.id)
    assert job is not None
    assert (job.state, job.last_error_code) == ("unknown", "worker_lost")
    assert (provider.drafts, provider.sent, len(provider.resumed_with)) == (["draft-1"], [], 1)


async def test_progress_under_a_lost_lease_stops_the_delivery(stores: Stores) -> None:
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    payload = {"to": [{"address": "ap@fabrikam.example"}], "subject": "s", "text": "hi"}
    job, _ = await stores.jobs.enqueue(
        NewJob(account.id, mailbox.id, "send", payload, "s", "contoso.example")
    )
    [claimed] = await stores.queue.claim("w1", 1, SETTINGS_LEASE)
    stranger = JobProgress(stores.queue, Lease(job.id, "w2", lease_owner("w2")))
    for step in (
        stranger.draft_created("d"),
        stranger.draft_completed("d"),
        stranger.about_to_send(),
    ):
        with pytest.raises(LeaseLost):
            await step
    owner = JobProgress(stores.queue, claimed.lease)
    await owner.draft_created("d")
    stored = await stores.jobs.get(job.id)
    assert stored is not None
    assert (stored.provider_draft_id, stored.provider_message_id, stored.in_flight_since) == (
        "d",
        None,
        None,
    )
    assert recorded_draft(stored) == ("d", False)
    await owner.draft_completed("d")
    await owner.about_to_send()
    stored = await stores.jobs.get(job.id)
    assert stored is not None and stored.in_flight_since is not None and owner.in_flight
    assert recorded_draft(stored) == ("d", True)
