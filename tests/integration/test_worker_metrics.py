"""What the worker reports through the telemetry port, read back from a Prometheus registry:
deferrals and their seconds, provider status classes, processing times, queue gauges."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from mailbox_worker.errors import Throttled
from mailbox_worker.jobs.store import NewJob
from mailbox_worker.jobs.worker import Worker
from mailbox_worker.prometheus import PrometheusTelemetry

from .conftest import Stores
from .test_worker import FAST, RecordingProvider, RecordingTokens


async def test_a_throttled_job_and_a_sent_one_are_counted_by_provider_and_status(
    stores: Stores,
) -> None:
    account = await stores.accounts.create_account("acme")
    throttled_box = await stores.connected_mailbox(account.id, "a@contoso.example")
    provider = RecordingProvider()
    provider.script.append(Throttled("429", retry_after=3600, provider_status=429))
    registry = CollectorRegistry()
    worker = Worker(
        stores.queue,
        stores.mailboxes,
        RecordingTokens(),
        {"microsoft": provider},
        FAST,
        PrometheusTelemetry(registry),
        "w1",
    )
    payload = {"to": [{"address": "ap@fabrikam.example"}], "subject": "Invoice", "text": "hi"}
    await stores.jobs.enqueue(
        NewJob(account.id, throttled_box.id, "send", payload, "one", "contoso.example")
    )
    async with asyncio.timeout(20):  # a hang guard, not a performance assertion
        await worker.run_until_idle()
    sending_box = await stores.connected_mailbox(account.id, "b@contoso.example")
    await stores.jobs.enqueue(
        NewJob(account.id, sending_box.id, "send", payload, "two", "contoso.example")
    )
    async with asyncio.timeout(20):
        await worker.run_until_idle()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    deferred = {"provider": "microsoft", "code": "throttled"}
    assert value("mailbox_worker_job_deferrals_total", **deferred) == 1
    assert value("mailbox_worker_job_deferred_seconds_total", **deferred) == 3600
    request = {"provider": "microsoft", "operation": "send"}
    assert (
        value(
            "mailbox_worker_provider_requests_total",
            **request,
            outcome="throttled",
            status_class="4xx",
        )
        == 1
    )
    assert (
        value("mailbox_worker_provider_requests_total", **request, outcome="ok", status_class="2xx")
        == 1
    )
    # Both jobs were processed (one deferred, one sent): one observation each.
    processed = {"provider": "microsoft", "mode": "send"}
    assert value("mailbox_worker_job_processing_seconds_count", **processed) == 2
    # The last housekeeping sampled the database: the deferred job waits, not yet due.
    assert value("mailbox_worker_jobs", state="queued") == 1
    assert value("mailbox_worker_jobs", state="sent") == 1
    assert value("mailbox_worker_oldest_job_age_seconds", state="queued") == 0
    assert value("mailbox_worker_mailboxes", provider="microsoft", state="connected") == 2
    assert value("mailbox_worker_lease_recoveries_total", result="requeued") == 0
    assert value("mailbox_worker_loop_last_success_timestamp_seconds", loop="housekeeping")
