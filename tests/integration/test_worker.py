"""The worker loop against the real queue (both databases) with a recording provider.

The provider and the token source here are fakes that record what they were asked and
answer what each test scripts; the queue, the database and the MIME building are real.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import email
import gc
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import idna
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select, update

from mailbox_worker.clock import utcnow
from mailbox_worker.config import WorkerSettings
from mailbox_worker.db.models import Job, JobEvent, Mailbox
from mailbox_worker.errors import (
    AccessTokenRejected,
    IdentityMisconfigured,
    OutcomeUnknown,
    PermanentError,
    ReauthRequired,
    Throttled,
    TransientError,
)
from mailbox_worker.events.outbox import Outbox
from mailbox_worker.jobs.store import NewJob
from mailbox_worker.jobs.worker import Worker
from mailbox_worker.policy import domains
from mailbox_worker.policy.slow_steps import SLOW_STEPS_ON_THE_LOOP
from mailbox_worker.prometheus import PrometheusTelemetry
from mailbox_worker.providers.base import (
    UNTRACKED,
    DeliveryMode,
    DeliveryProgress,
    DeliveryReceipt,
    OutgoingMessage,
)
from mailbox_worker.states import TERMINAL, MailboxState

from .conftest import Stores

FAST = WorkerSettings(
    poll_interval=0.02, retry_initial=0.01, retry_max=0.05, max_attempts=3, lease_seconds=30
)
Script = deque[Exception | Callable[[], None]]


@dataclass
class RecordingProvider:
    """Answers each call from ``script`` (an exception to raise), else accepts."""

    name: str = "microsoft"
    script: Script = field(default_factory=deque)
    calls: list[tuple[str, str, OutgoingMessage]] = field(default_factory=list)
    delay: float = 0.0

    def max_message_bytes(self, mode: DeliveryMode, capabilities: Collection[str]) -> int:
        return 3_000_000

    async def _call(self, operation: str, token: str, message: OutgoingMessage) -> None:
        self.calls.append((operation, token, message))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.script:
            step = self.script.popleft()
            if isinstance(step, Exception):
                raise step
            step()

    async def send(
        self,
        access_token: str,
        message: OutgoingMessage,
        *,
        progress: DeliveryProgress = UNTRACKED,
    ) -> DeliveryReceipt:
        await progress.about_to_send()
        await self._call("send", access_token, message)
        return DeliveryReceipt(state="sent")

    async def create_draft(
        self,
        access_token: str,
        message: OutgoingMessage,
        *,
        progress: DeliveryProgress = UNTRACKED,
    ) -> DeliveryReceipt:
        await self._call("draft", access_token, message)
        return DeliveryReceipt(
            state="drafted", provider_message_id="AAMk-draft-1", web_link="https://x"
        )

    async def close(self) -> None:
        return None


@dataclass
class RecordingTokens:
    script: Script = field(default_factory=deque)
    issued: int = 0
    forgotten: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)

    async def get(self, mailbox: Mailbox, *, force_refresh: bool = False) -> str:
        if self.script:
            step = self.script.popleft()
            if isinstance(step, Exception):
                raise step
        self.issued += 1
        return f"token-{self.issued}"

    def forget(self, mailbox_id: str) -> None:
        self.forgotten.append(mailbox_id)

    def reject(self, mailbox_id: str, token: str) -> None:
        self.rejected.append((mailbox_id, token))


@dataclass
class Harness:
    stores: Stores
    provider: RecordingProvider
    tokens: RecordingTokens
    worker: Worker
    mailbox: Mailbox
    stop: asyncio.Event
    running: asyncio.Task[None]

    async def enqueue(
        self,
        mode: str = "send",
        subject: str = "Invoice",
        to: str | list[str] = "ap@fabrikam.example",
    ) -> Job:
        addresses = [to] if isinstance(to, str) else to
        payload = {"to": [{"address": a} for a in addresses], "subject": subject, "text": "hi"}
        job, _ = await self.stores.jobs.enqueue(
            NewJob(
                self.mailbox.account_id, self.mailbox.id, mode, payload, subject, "contoso.example"
            )
        )
        self.worker.wake()
        return job

    async def settled(self, job: Job, states: frozenset[str] = TERMINAL) -> Job:
        async with asyncio.timeout(20):  # a hang guard, not a performance assertion
            while True:
                current = await self.stores.jobs.get(job.id)
                assert current is not None
                if current.state in states:
                    return current
                await asyncio.sleep(0.01)

    async def pause(self) -> None:
        """Stop the worker's loop and let its in-flight jobs finish: from here on the worker
        does only the passes the test drives (``worker.run_once``)."""
        self.stop.set()
        await self.running

    def resume(self) -> None:
        """Start the worker's loop again."""
        self.stop = asyncio.Event()
        self.running = asyncio.create_task(self.worker.run(self.stop))


@pytest.fixture
async def harness(stores: Stores) -> AsyncIterator[Harness]:
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    provider, tokens = RecordingProvider(), RecordingTokens()
    metrics = PrometheusTelemetry(CollectorRegistry())
    worker = Worker(
        stores.queue,
        stores.mailboxes,
        tokens,
        {"microsoft": provider},
        FAST,
        metrics,
        "w1",
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    harness = Harness(stores, provider, tokens, worker, mailbox, stop, running)
    yield harness
    await harness.pause()


async def test_send_and_draft(harness: Harness) -> None:
    sent = await harness.settled(await harness.enqueue("send"))
    drafted = await harness.settled(await harness.enqueue("draft"))
    assert (sent.state, sent.attempts) == ("sent", 1)
    assert (drafted.state, drafted.provider_message_id) == ("drafted", "AAMk-draft-1")
    operation, token, message = harness.provider.calls[0]
    assert (operation, token) == ("send", "token-1")
    assert email.message_from_bytes(message.mime)["Message-ID"] == sent.message_id


async def test_throttling_defers_without_counting_as_failure(harness: Harness) -> None:
    harness.provider.script.extend([Throttled("429", retry_after=0.05)] * 4)
    job = await harness.settled(await harness.enqueue())
    assert (job.state, job.transient_failures, job.attempts) == ("sent", 0, 5)
    codes = [event.code for event in await harness.stores.jobs.events(job.id)]
    assert codes.count("throttled") == 4


async def test_throttling_pauses_the_mailbox_for_every_worker(harness: Harness) -> None:
    await harness.pause()  # the test drives the passes
    harness.provider.script.append(Throttled("429", retry_after=3600))
    job = await harness.enqueue()
    async with asyncio.timeout(20):  # a hang guard, not a performance assertion
        await harness.worker.run_until_idle()
    stored = await harness.stores.jobs.get(job.id)
    assert stored is not None
    assert (stored.state, stored.last_error_code, stored.transient_failures) == (
        "queued",
        "throttled",
        0,
    )
    mailbox = await harness.stores.mailboxes.get(stored.mailbox_id)
    assert mailbox is not None
    assert (mailbox.paused_until, mailbox.pause_reason) == (stored.run_after, "throttled")
    # Any worker skips the mailbox until then, even for a job that is due now.
    async with harness.stores.sessions.begin() as session:
        await session.execute(
            update(Job).where(Job.id == job.id).values(run_after=dt.datetime.now(dt.UTC))
        )
    assert await harness.stores.queue.claim("another-worker", 8, dt.timedelta(seconds=30)) == []


async def test_transient_errors_retry_then_give_up(harness: Harness) -> None:
    harness.provider.script.extend([TransientError("503", code="network")] * 3)
    job = await harness.settled(await harness.enqueue())
    assert (job.state, job.last_error_code, job.attempts) == ("failed", "retries_exhausted", 3)


async def test_a_transient_error_then_success(harness: Harness) -> None:
    harness.provider.script.append(TransientError("reset before sending", code="network"))
    job = await harness.settled(await harness.enqueue())
    assert (job.state, job.transient_failures, job.attempts) == ("sent", 1, 2)


async def test_permanent_error_fails_at_once(harness: Harness) -> None:
    harness.provider.script.append(PermanentError("bad rcpt", code="invalid_recipients"))
    job = await harness.settled(await harness.enqueue())
    assert (job.state, job.last_error_code, job.attempts) == ("failed", "invalid_recipients", 1)


async def test_a_message_that_can_no_longer_be_built_fails_without_a_provider_call(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A job queued while IDNA 2003 spelled its recipient's domain (``☃.net``, which IDNA
    2008 disallows; docs/api.md, "Addresses") fails at once with ``invalid_message``: it was an
    internal error retried until its attempts ran out. The reason quotes nothing of it."""
    job = await harness.settled(await harness.enqueue(to="ap@☃.net"))
    assert (job.state, job.last_error_code, job.attempts) == ("failed", "invalid_message", 0)
    assert job.last_error_message == "the message can no longer be built (InvalidCodepoint)"
    assert harness.provider.calls == [] and harness.tokens.issued == 0
    logged = [record.getMessage() for record in caplog.records if job.id in record.getMessage()]
    assert logged == [f"job {job.id}: {job.last_error_message}; it fails"]
    sent = await harness.settled(await harness.enqueue(to="ap@straße.example"))
    recipient = email.message_from_bytes(harness.provider.calls[0][2].mime)["To"]
    assert (sent.state, recipient) == ("sent", "ap@xn--strae-oqa.example")


async def test_the_payload_is_let_go_before_the_provider_call(harness: Harness) -> None:
    """Once its message is built, a job's payload (a large invoice's base64) is no longer held
    by the worker through the provider's call (docs/performance.md#memory)."""
    subject = f"Invoice {uuid.uuid4().hex}"
    alive: list[int] = []

    def payloads_alive() -> None:
        gc.collect()
        alive.append(
            sum(1 for o in gc.get_objects() if type(o) is dict and o.get("subject") == subject)
        )

    harness.provider.script.append(payloads_alive)
    sent = await harness.settled(await harness.enqueue(subject=subject))
    assert sent.state == "sent"
    assert alive == [0]


@pytest.mark.parametrize("new_domains", [SLOW_STEPS_ON_THE_LOOP, SLOW_STEPS_ON_THE_LOOP + 1])
async def test_a_message_of_many_new_domains_is_built_beside_the_loop(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, new_domains: int
) -> None:
    """Each new internationalised domain costs 0.3 to 1 ms to spell: a message with more
    than ``SLOW_STEPS_ON_THE_LOOP`` is built in a thread, so that it does not hold the loop
    (and every other job's lease and call) for up to seconds; one with fewer is built on the
    loop."""
    spelled = [f"worker{n}.bücher.example" for n in range(new_domains)]
    encode = idna.encode
    threads: set[str] = set()

    def spy(domain: str, **options: Any) -> bytes:
        threads.add(threading.current_thread().name)
        answer: bytes = encode(domain, **options)
        return answer

    monkeypatch.setattr(idna, "encode", spy)
    domains._spelling.cache_clear()

    sent = await harness.settled(await harness.enqueue(to=[f"ap@{d}" for d in spelled]))

    assert sent.state == "sent"
    recipients = email.message_from_bytes(harness.provider.calls[0][2].mime)["To"]
    assert recipients.count("@worker") == new_domains and "xn--bcher-kva" in recipients
    on_the_loop = threading.current_thread().name  # the worker runs on the test's loop
    assert threads == {on_the_loop if new_domains <= SLOW_STEPS_ON_THE_LOOP else "costly-builds_0"}


async def test_unknown_outcome_is_never_retried(harness: Harness) -> None:
    harness.provider.script.append(OutcomeUnknown("timeout after sending", code="timeout"))
    job = await harness.settled(await harness.enqueue())
    assert (job.state, job.last_error_code) == ("unknown", "timeout")
    await harness.pause()
    assert await harness.worker.run_once() == 0  # a pass after the outcome claims nothing
    assert len(harness.provider.calls) == 1


async def test_an_unexpected_error_in_flight_is_unknown_not_retried(harness: Harness) -> None:
    harness.provider.script.append(RuntimeError("bug"))
    job = await harness.settled(await harness.enqueue())
    assert (job.state, job.last_error_code) == ("unknown", "internal_error")


async def test_rejected_access_token_is_dropped_and_the_job_retried(harness: Harness) -> None:
    harness.provider.script.append(AccessTokenRejected("401"))
    job = await harness.settled(await harness.enqueue())
    assert job.state == "sent"
    assert harness.tokens.rejected == [(harness.mailbox.id, "token-1")]
    assert [token for _, token, _ in harness.provider.calls] == ["token-1", "token-2"]


async def test_lost_grant_holds_the_mailbox_jobs_until_reconnect(harness: Harness) -> None:
    harness.tokens.script.append(ReauthRequired("AADSTS50173", code="invalid_grant"))
    job = await harness.settled(await harness.enqueue(), frozenset({"held"}))
    mailbox = await harness.stores.mailboxes.get(harness.mailbox.id)
    assert mailbox is not None
    assert (mailbox.state, mailbox.state_reason) == ("reauth_required", "invalid_grant")
    [event, held] = await Outbox(harness.stores.sessions).all()
    assert (event.kind, event.payload) == (
        "mailbox.reauth_required",
        {"mailbox_id": mailbox.id, "provider": "microsoft", "reason": "invalid_grant"},
    )
    assert (held.kind, held.payload["job_id"], held.payload["code"]) == (
        "job.held",
        job.id,
        "invalid_grant",
    )
    await harness.pause()
    later = await harness.enqueue(subject="enqueued while broken")
    assert await harness.worker.run_once() == 0  # a pass with it due claims nothing
    assert (await harness.stores.jobs.get(later.id)).state == "queued"  # type: ignore[union-attr]
    assert harness.provider.calls == []
    await harness.stores.mailboxes.mark_connected(mailbox.id, "billing@contoso.example", [])
    assert await harness.stores.jobs.release_held(mailbox.id) == 1
    harness.resume()
    assert (await harness.settled(job)).state == "sent"
    assert (await harness.settled(later)).state == "sent"
    assert (await harness.stores.mailboxes.get(mailbox.id)).state == MailboxState.CONNECTED  # type: ignore[union-attr]


async def test_stop_lets_in_flight_jobs_finish(stores: Stores) -> None:
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    provider = RecordingProvider(delay=0.3)
    worker = Worker(
        stores.queue,
        stores.mailboxes,
        RecordingTokens(),
        {"microsoft": provider},
        FAST,
        PrometheusTelemetry(CollectorRegistry()),
        "w-stop",
    )
    payload = {"to": [{"address": "ap@fabrikam.example"}], "subject": "s", "text": "t"}
    job, _ = await stores.jobs.enqueue(
        NewJob(account.id, mailbox.id, "send", payload, "h", "c.example")
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    async with asyncio.timeout(10):
        while not provider.calls:
            await asyncio.sleep(0.01)
    stop.set()
    await running
    finished = await stores.jobs.get(job.id)
    assert finished is not None and finished.state == "sent"


async def test_a_misconfigured_identity_app_defers_jobs_without_failing_them(
    harness: Harness,
) -> None:
    harness.tokens.script.append(
        IdentityMisconfigured("invalid_client", code="identity_misconfigured", retry_after=300)
    )
    job = await harness.enqueue()
    async with asyncio.timeout(20):  # a hang guard, not a performance assertion
        while not any(
            event.code == "identity_misconfigured"
            for event in await harness.stores.jobs.events(job.id)
        ):
            await asyncio.sleep(0.01)
    waiting = await harness.stores.jobs.get(job.id)
    assert waiting is not None
    assert (waiting.state, waiting.transient_failures) == ("queued", 0)
    assert waiting.run_after - utcnow() > dt.timedelta(seconds=250)
    assert harness.provider.calls == []


async def _worker_with_jobs(
    stores: Stores, settings: WorkerSettings, provider: RecordingProvider, count: int, name: str
) -> tuple[Worker, list[Job]]:
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    payload = {"to": [{"address": "ap@fabrikam.example"}], "subject": "s", "text": "t"}
    jobs = [
        (
            await stores.jobs.enqueue(
                NewJob(account.id, mailbox.id, "send", payload, f"h{n}", "c.example")
            )
        )[0]
        for n in range(count)
    ]
    worker = Worker(
        stores.queue,
        stores.mailboxes,
        RecordingTokens(),
        {"microsoft": provider},
        settings,
        PrometheusTelemetry(CollectorRegistry()),
        name,
    )
    return worker, jobs


async def test_a_worker_never_leases_more_jobs_than_its_concurrency(stores: Stores) -> None:
    settings = dataclasses.replace(FAST, concurrency=3, per_mailbox_concurrency=3)
    provider = RecordingProvider(delay=0.02)
    worker, jobs = await _worker_with_jobs(stores, settings, provider, 30, "w-cap")
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    async with asyncio.timeout(30):  # a hang guard, not a performance assertion
        while (await stores.queue.count_by_state())["sent"] < len(jobs):
            await asyncio.sleep(0.01)
    stop.set()
    await running
    # The jobs' own history, in the order it was written (this worker claims only once a
    # slot is free, i.e. after the job that held it left `running`): every claim raises the
    # number of leases held, every exit from `running` lowers it. No sampling to miss a peak.
    query = (
        select(JobEvent.from_state, JobEvent.to_state)
        .where(JobEvent.kind == "state", JobEvent.job_id.in_([job.id for job in jobs]))
        .order_by(JobEvent.id)
    )
    async with stores.sessions() as session:
        history = (await session.execute(query)).all()
    held = most = 0
    for from_state, to_state in history:
        held += (to_state == "running") - (from_state == "running")
        most = max(most, held)
    assert held == 0
    assert most == 3  # 30 jobs of 20 ms, 3 slots: every slot is used, none beyond
    assert len(provider.calls) == 30


@pytest.mark.parametrize("hears_every_enqueue", [True, False])
async def test_a_worker_does_not_claim_again_after_a_claim_that_took_all_that_was_due(
    stores: Stores, monkeypatch: pytest.MonkeyPatch, hears_every_enqueue: bool
) -> None:
    """A claim that took every due job (``ClaimBatch.more`` and ``due_left`` False) is not
    followed at once by one that finds nothing; nor, when the worker hears every enqueue
    (``hears_every_enqueue``), by one when its jobs finish (a free slot has nothing to
    take): it waits for an enqueue, the next due job or the poll. When it may not hear
    every enqueue (behind a transaction pooler), its jobs finishing still wake it."""
    settings = dataclasses.replace(FAST, concurrency=8, poll_interval=30)
    provider = RecordingProvider(delay=0.2)
    worker, jobs = await _worker_with_jobs(stores, settings, provider, 3, "w-once")
    worker.hears_every_enqueue = lambda: hears_every_enqueue
    claims: list[int] = []
    claim_batch = stores.queue.claim_batch

    async def counted(worker_name: str, limit: int, lease: dt.timedelta) -> Any:
        batch = await claim_batch(worker_name, limit, lease)
        claims.append(len(batch.jobs))
        return batch

    monkeypatch.setattr(stores.queue, "claim_batch", counted)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    async with asyncio.timeout(10):
        while len(provider.calls) < 3:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # the calls take 0.2 s: no second, empty claim meanwhile
    assert claims == [3]
    async with asyncio.timeout(30):  # a hang guard, not a performance assertion
        while (await stores.queue.count_by_state())["sent"] < len(jobs):
            await asyncio.sleep(0.01)
    if hears_every_enqueue:
        await asyncio.sleep(0.05)  # the finishes, had they woken it, would have claimed by now
        assert claims == [3]
        worker.wake()  # an enqueue's wake-up still claims
    async with asyncio.timeout(10):  # the poll is 30 s away
        while len(claims) < 2:
            await asyncio.sleep(0.01)
    stop.set()
    await running
    assert claims[0] == 3 and set(claims[1:]) == {0}


async def test_a_job_finishing_while_a_claim_runs_wakes_the_worker_if_jobs_were_left(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim finds a mailbox at its concurrency (its one slot held by our own job) and
    leaves its due job (``due_left``); our job finishes while that claim still runs, when
    its slot could not yet be known to help. The worker claims again at once, not at the
    poll: the left job is sent."""
    settings = dataclasses.replace(FAST, concurrency=8, poll_interval=30)
    release = asyncio.Event()
    provider = RecordingProvider()
    record = provider._call

    async def held_first(operation: str, token: str, message: OutgoingMessage) -> None:
        await record(operation, token, message)
        if len(provider.calls) == 1:
            await release.wait()

    monkeypatch.setattr(provider, "_call", held_first)
    worker, jobs = await _worker_with_jobs(stores, settings, provider, 1, "w-race")
    worker.hears_every_enqueue = lambda: True
    first = jobs[0]
    async with stores.sessions.begin() as session:
        await session.execute(
            update(Mailbox).where(Mailbox.id == first.mailbox_id).values(max_concurrency=1)
        )
    claims: list[tuple[int, bool]] = []
    claim_batch = stores.queue.claim_batch

    async def racing(worker_name: str, limit: int, lease: dt.timedelta) -> Any:
        batch = await claim_batch(worker_name, limit, lease)
        claims.append((len(batch.jobs), batch.due_left))
        if len(claims) == 2:  # the claim has looked; our first job finishes before it returns
            release.set()
            while worker._in_flight:
                await asyncio.sleep(0.005)
        return batch

    monkeypatch.setattr(stores.queue, "claim_batch", racing)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    async with asyncio.timeout(10):
        while not provider.calls:
            await asyncio.sleep(0.01)
    payload = {"to": [{"address": "ap@fabrikam.example"}], "subject": "s", "text": "t"}
    await stores.jobs.enqueue(
        NewJob(first.account_id, first.mailbox_id, "send", payload, "second", "c.example")
    )
    worker.wake()  # the enqueue's wake-up
    try:
        async with asyncio.timeout(10):  # the poll is 30 s away
            while (await stores.queue.count_by_state())["sent"] < 2:
                await asyncio.sleep(0.01)
    finally:
        release.set()
        stop.set()
        await running
    assert claims[:3] == [(1, False), (0, True), (1, False)]


async def test_stop_hands_back_claimed_jobs_that_had_not_started(stores: Stores) -> None:
    settings = dataclasses.replace(FAST, concurrency=4)
    provider = RecordingProvider(delay=0.3)
    worker, jobs = await _worker_with_jobs(stores, settings, provider, 4, "w-stop")
    # run_once returns with the four jobs claimed and their tasks created but not yet run
    # (nothing awaited since); stopping now must hand all four back, not start them.
    assert await worker.run_once() == 4
    stop = asyncio.Event()
    stop.set()
    async with asyncio.timeout(10):  # a hang guard, not a performance assertion
        await worker.run(stop)
    states = [await stores.jobs.get(job.id) for job in jobs]
    assert provider.calls == []  # nothing started after the stop
    for job in states:
        assert job is not None
        assert (job.state, job.lease_owner, job.lease_expires_at) == ("queued", None, None)
        assert (job.attempts, job.last_error_code) == (0, "worker_stopped")
        last = (await stores.jobs.events(job.id))[-1]
        assert (last.from_state, last.to_state, last.code, last.worker) == (
            "running",
            "queued",
            "worker_stopped",
            "w-stop",
        )
    # Queued again at once, not after the lease: another worker claims them now.
    assert len(await stores.queue.claim("w-next", 10, dt.timedelta(seconds=30))) == 4
