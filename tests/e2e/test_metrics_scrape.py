"""The daemon's /metrics, scraped from a live process after it sent a few jobs.

``promtool check metrics`` must find nothing to say about the page; the key families must be
there with the figures the run implies (docs/operations.md lists them); no label value may
name an address. The names the alert rules and the dashboard use must all be on the page.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import subprocess
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from mailbox_worker.demo import play_admin_consent
from mailbox_worker.sandbox import Sandbox
from tests.config_metrics import exported_names, referenced_metric_names
from tests.ports import free_port
from tests.tools import promtool

from .conftest import ADDRESS, Daemon, call, start

pytestmark = pytest.mark.e2e

SENDS, DRAFTS = 3, 1
FINAL = {"sent", "drafted", "failed", "unknown", "cancelled"}
LOOPS = {
    "worker",
    "housekeeping",
    "lease_renewal",
    "callbacks",
    "retention",
    "audit_seal",
    "revocations",
    "storage_scrub",
    "key_rotation",
}
"""Every background loop ``serve`` runs with these settings (callbacks configured)."""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(page: str) -> tuple[Samples, set[str]]:
    """Every sample by (name, labels), and the names the page declares or shows."""
    families = list(text_string_to_metric_families(page))
    samples: Samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in families
        for sample in family.samples
    }
    return samples, exported_names(families)


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"{name}{labels} is not on the page"
    return samples[key]


@pytest.fixture
async def callback_receiver() -> AsyncIterator[str]:
    """A stand-in for the invoicing app's callback URL: acknowledges every event."""

    async def receive(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/events", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/events"
    await runner.cleanup()


async def scrape(http: aiohttp.ClientSession, daemon: Daemon) -> str:
    async with http.get(f"{daemon.base_url}/metrics") as answer:
        assert answer.status == 200
        return await answer.text()


async def test_a_live_scrape_passes_promtool_and_counts_what_was_sent(
    daemon: Daemon, sandbox: Sandbox, callback_receiver: str
) -> None:
    checker = promtool()
    daemon.environment.update(
        {
            "MAILBOX_WORKER_CALLBACKS__URL": callback_receiver,
            "MAILBOX_WORKER_CALLBACKS__SECRET": "e2e-callback-secret",
            "MAILBOX_WORKER_CALLBACKS__POLL_INTERVAL": "0.2",
            # Lease renewal runs every lease/3 seconds: short, so it has passed once here.
            "MAILBOX_WORKER_WORKER__LEASE_SECONDS": "3",
        }
    )
    account = daemon.cli("accounts", "create", "Contoso Ltd")
    api_key = daemon.cli("keys", "create", "--account", account)
    started_at = time.time()
    await start(daemon)
    assert daemon.process is not None
    sandbox_ssl = ssl.create_default_context(cafile=str(sandbox.ca_path))
    try:
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {api_key}"}) as http,
            aiohttp.ClientSession() as browser,
        ):
            status, created = await call(
                http,
                daemon,
                "POST",
                "/v1/mailboxes",
                json={"provider": "microsoft", "capabilities": ["send", "draft"]},
            )
            assert status == 201, created
            await play_admin_consent(browser, created["authorization_url"], ADDRESS, sandbox_ssl)
            mailbox_id = created["mailbox"]["id"]
            jobs = []
            for number, mode in enumerate(["send"] * SENDS + ["draft"] * DRAFTS):
                body = {
                    "mailbox_id": mailbox_id,
                    "mode": mode,
                    "message": {
                        "to": [{"address": "ap@fabrikam.example"}],
                        "subject": f"Invoice INV-{number}",
                        "text": "Attached.",
                    },
                }
                status, job = await call(http, daemon, "POST", "/v1/jobs", json=body)
                assert status == 202, job
                jobs.append(job["id"])

            async with asyncio.timeout(60):
                while True:
                    states = [(await call(http, daemon, "GET", f"/v1/jobs/{j}"))[1] for j in jobs]
                    if all(s["state"] in FINAL for s in states):
                        break
                    await asyncio.sleep(0.1)
            assert sorted(s["state"] for s in states) == ["drafted"] + ["sent"] * SENDS

            # The gauges are sampled by housekeeping (every 5 s), the loops pass on their own
            # schedules: wait until the page has caught up with the run, then check it.
            async with asyncio.timeout(60):
                while True:
                    page = await scrape(http, daemon)
                    samples, names = parse(page)
                    caught_up = samples.get(
                        ("mailbox_worker_jobs", frozenset({("state", "sent")}))
                    ) == SENDS and all(
                        (
                            "mailbox_worker_loop_last_success_timestamp_seconds",
                            frozenset({("loop", loop)}),
                        )
                        in samples
                        for loop in LOOPS
                    )
                    if caught_up:
                        break
                    await asyncio.sleep(0.5)
    finally:
        daemon.process.send_signal(signal.SIGTERM)
        exit_code = daemon.process.wait(timeout=60)
    assert exit_code == 0, daemon.log_path.read_text()[-3000:]

    checked = subprocess.run(
        [checker, "check", "metrics"], input=page.encode(), capture_output=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == b"", checked.stdout  # no lint problem either

    # Database-sampled gauges: what was sent, every state present.
    assert value(samples, "mailbox_worker_jobs", state="sent") == SENDS
    assert value(samples, "mailbox_worker_jobs", state="drafted") == DRAFTS
    assert value(samples, "mailbox_worker_jobs", state="queued") == 0
    assert value(samples, "mailbox_worker_oldest_job_age_seconds", state="queued") == 0
    assert value(samples, "mailbox_worker_oldest_job_age_seconds", state="running") == 0
    assert value(samples, "mailbox_worker_mailboxes", provider="microsoft", state="connected") == 1
    assert value(samples, "mailbox_worker_mailboxes", provider="google", state="connected") == 0

    # Counters and the histogram of this process.
    assert value(samples, "mailbox_worker_jobs_enqueued_total", mode="send") == SENDS
    assert value(samples, "mailbox_worker_jobs_enqueued_total", mode="draft") == DRAFTS
    assert value(samples, "mailbox_worker_job_transitions_total", state="sent", code="ok") == SENDS
    processed = "mailbox_worker_job_processing_seconds_count"
    assert value(samples, processed, provider="microsoft", mode="send") == SENDS
    assert value(samples, processed, provider="microsoft", mode="draft") == DRAFTS
    sends = value(
        samples,
        "mailbox_worker_provider_requests_total",
        provider="microsoft",
        operation="send",
        outcome="ok",
        status_class="2xx",
    )
    assert sends == SENDS
    # The consent's own access token served every job: no refresh yet, the family declared.
    assert "mailbox_worker_token_refreshes_total" in names
    # mailbox.connected and one job.<state> event a job, all acknowledged.
    delivered = value(samples, "mailbox_worker_callback_deliveries_total", result="delivered")
    assert delivered >= SENDS + DRAFTS
    assert value(samples, "mailbox_worker_callback_deliveries_total", result="rejected") == 0
    assert value(samples, "mailbox_worker_lease_recoveries_total", result="unknown") == 0
    info = [key for key in samples if key[0] == "mailbox_worker_build_info"]
    assert len(info) == 1 and dict(info[0][1])["version"] not in {"", "unknown"}

    # Loop health: every loop announced its interval and has passed since the daemon started.
    intervals = {
        dict(labels)["loop"]
        for name, labels in samples
        if name == "mailbox_worker_loop_interval_seconds"
    }
    assert intervals == LOOPS
    for loop in LOOPS | {"outcome_write"}:
        last = value(samples, "mailbox_worker_loop_last_success_timestamp_seconds", loop=loop)
        assert started_at <= last <= time.time(), loop

    # Bounded, non-personal labels: no address, no mailbox or job id.
    label_values = {v for _, labels in samples for _, v in labels}
    assert not [v for v in label_values if "@" in v or v.startswith(("mbx_", "job_"))]
    assert mailbox_id not in page

    # Every name the alert rules and the dashboard query is on the page (declared, at least:
    # a labelled counter has no sample before its first count).
    assert referenced_metric_names() - names == set()
