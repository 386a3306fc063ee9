"""Google mailboxes end to end in the daemon: connected through the real consent flow, their
jobs sent and drafted by the worker through the Gmail provider, deferred (never failed) by
Gmail's limits, and a forbidden Gmail operation refused, counted and audited.

The daemon reads the sandbox's clock (``running_world(sandbox_clock=True)``), so advancing it
moves Google's windows and our queue's ``run_after`` together; nothing waits for real time.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email
import email.policy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mailbox_worker.db.models import Job, Mailbox
from mailbox_worker.errors import PolicyViolation
from mailbox_worker.providers.gmail import GmailProvider

from .oauth_world import World, running_world

GOOGLE_USER = "invoices@fabrikam.example"
DAY = 24 * 3600


@pytest.fixture
async def world(migrated_database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with running_world(migrated_database_url, tmp_path, sandbox_clock=True) as running:
        yield running


async def gmail_messages(world: World, **query: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{world.sandbox.base_url}/_sandbox/google/messages", params=query, ssl=world.ssl
        ) as answer,
    ):
        return list((await answer.json())["messages"])


async def raw_message(world: World, message_id: str) -> bytes:
    url = f"{world.sandbox.base_url}/_sandbox/google/messages/{message_id}/raw"
    async with aiohttp.ClientSession() as http, http.get(url, ssl=world.ssl) as answer:
        return await answer.read()


async def run_worker(world: World) -> None:
    await asyncio.wait_for(world.app.worker.run_until_idle(), timeout=120)


async def job_row(world: World, job_id: str) -> Job:
    job = await world.app.jobs.get(job_id)
    assert job is not None
    return job


async def google_mailbox(world: World, capabilities: tuple[str, ...] = ("send",)) -> Mailbox:
    return await world.connected("google", capabilities, login=GOOGLE_USER)


async def test_a_google_mailbox_sends_and_drafts_through_the_worker(world: World) -> None:
    mailbox = await google_mailbox(world, ("send", "draft"))
    pdf = b"%PDF-1.4 invoice 4711 " + bytes(range(256)) * 40
    attachment = {
        "filename": "INV-4711.pdf",
        "content_type": "application/pdf",
        "content_base64": base64.b64encode(pdf).decode(),
    }
    message = {
        "to": [{"address": "ap@fabrikam.example"}],
        "subject": "Invoice 4711",
        "text": "attached",
        "attachments": [attachment],
    }
    sent = await world.enqueue(mailbox.id, message=message)
    drafted = await world.enqueue(mailbox.id, mode="draft", message=message)
    await run_worker(world)
    sent_job, drafted_job = await job_row(world, sent.id), await job_row(world, drafted.id)
    assert (sent_job.state, drafted_job.state) == ("sent", "drafted")
    [sent_record] = await gmail_messages(world, label="SENT")
    [draft_record] = await gmail_messages(world, label="DRAFT")
    assert (sent_record["message_id"], sent_record["id"]) == (
        sent.message_id,
        sent_job.provider_message_id,
    )
    assert (draft_record["message_id"], draft_record["draft_id"]) == (
        drafted.message_id,
        drafted_job.provider_draft_id,
    )
    for record in (sent_record, draft_record):
        parsed = email.message_from_bytes(
            await raw_message(world, record["id"]), policy=email.policy.default
        )
        [part] = list(parsed.iter_attachments())
        assert part.get_content() == pdf


async def test_job_n_plus_1_waits_for_the_daily_window_and_is_then_sent(world: World) -> None:
    mailbox = await google_mailbox(world)
    world.sandbox.state.gmail.set_limits(GOOGLE_USER, daily_sending_limit=2)
    jobs = [await world.enqueue(mailbox.id) for _ in range(3)]
    await run_worker(world)
    rows = [await job_row(world, job.id) for job in jobs]
    assert sorted(row.state for row in rows) == ["queued", "sent", "sent"]  # sent concurrently
    [deferred] = [row for row in rows if row.state == "queued"]
    assert (deferred.last_error_code, deferred.transient_failures) == ("sending_limit", 0)
    assert deferred.run_after > world.sandbox.state.clock.utcnow() + dt.timedelta(hours=23)
    await run_worker(world)  # not due yet: nothing is tried
    assert (await job_row(world, deferred.id)).state == "queued"
    assert world.sandbox.state.counters()["gmail.throttled.sending_limit"] == 1
    world.sandbox.state.advance(DAY + 1)
    await run_worker(world)  # the token expired meanwhile: refreshed after Gmail's 401
    settled = await job_row(world, deferred.id)
    assert settled.state == "sent"
    assert len(await gmail_messages(world, label="SENT")) == 3


async def test_a_user_rate_limit_defers_exactly_until_its_retry_after(world: World) -> None:
    mailbox = await google_mailbox(world)
    world.sandbox.state.queue_fault("gmail.messages.send", "status", status=429, retry_after=600)
    before = world.sandbox.state.clock.utcnow()
    job = await world.enqueue(mailbox.id)
    await run_worker(world)
    after = world.sandbox.state.clock.utcnow()
    row = await job_row(world, job.id)
    assert (row.state, row.last_error_code, row.transient_failures) == ("queued", "throttled", 0)
    # Gmail named a time to the millisecond: the job is due then, not at our backoff.
    margin = dt.timedelta(milliseconds=1)
    wait = dt.timedelta(seconds=600)
    assert before + wait - margin <= row.run_after <= after + wait + margin
    world.sandbox.state.advance(598)
    await run_worker(world)
    assert (await job_row(world, job.id)).state == "queued"
    world.sandbox.state.advance(3)
    await run_worker(world)
    assert (await job_row(world, job.id)).state == "sent"


async def test_a_forbidden_gmail_call_is_refused_counted_and_audited(world: World) -> None:
    provider = world.app.providers["google"]
    assert isinstance(provider, GmailProvider)
    before = world.sandbox.state.counters()
    with pytest.raises(PolicyViolation):
        provider.client.users().messages().list(userId="me")
    await world.app.violations.flush()
    assert world.sandbox.state.counters() == before
    counted = world.app.registry.get_sample_value(
        "mailbox_worker_policy_violations_total", {"rule": "google_operation_allow_list"}
    )
    assert counted == 1.0
    [event] = [e for e in await world.app.accounts.audit_events() if e.action == "policy.violation"]
    assert event.detail["attempted"].endswith("/gmail/v1/users/{userId}/messages")
    assert event.account_id is None


async def test_a_401_refreshes_once_then_a_dead_grant_holds_the_job(world: World) -> None:
    mailbox = await google_mailbox(world)
    first = await world.enqueue(mailbox.id)
    await run_worker(world)  # an access token is now cached
    assert (await job_row(world, first.id)).state == "sent"
    world.sandbox.state.google.apply_scenario(GOOGLE_USER, "revoked")
    job = await world.enqueue(mailbox.id)
    await run_worker(world)
    row = await job_row(world, job.id)
    # Gmail refused the cached token (401), the forced refresh found the grant gone.
    assert (row.state, row.last_error_code) == ("held", "invalid_grant")
    codes = [event.code for event in await world.app.jobs.events(job.id)]
    assert codes.count("access_token_rejected") == 1
    current = await world.app.mailboxes.get(mailbox.id)
    assert current is not None and current.state == "reauth_required"
    assert len(await gmail_messages(world, label="SENT")) == 1
