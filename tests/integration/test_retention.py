"""Retention (docs/retention.md; docs/privacy.md PP-4, PP-6): each kind is purged once past
its period and kept before it; an undelivered outbox event and the content of a job that can
still run are never purged; the daemon runs the purge by itself."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, insert, select, update

from mailbox_worker.app import App
from mailbox_worker.clock import utcnow
from mailbox_worker.config import DatabaseSettings, KeySettings, ServerSettings, Settings
from mailbox_worker.db.models import (
    AuditEvent,
    Job,
    JobContent,
    JobEvent,
    Mailbox,
    OAuthState,
    OutboxEvent,
)
from mailbox_worker.db.retention import Retention, RetentionSettings
from mailbox_worker.prometheus import PrometheusTelemetry
from mailbox_worker.states import JobState, MailboxState
from tests.ports import free_port

from .api_harness import IdleProvider
from .conftest import Stores
from .test_queue import new_job

NOW = utcnow()
DAY = dt.timedelta(days=1)
SMALL_BATCHES = RetentionSettings(batch_size=2, pause=0)
"""Batches of two rows: every kind takes several statements."""


def retention(stores: Stores, telemetry: PrometheusTelemetry | None = None) -> Retention:
    return Retention(
        stores.sessions,
        SMALL_BATCHES,
        scrubber=stores.scrubber,
        telemetry=telemetry,
        clock=lambda: NOW,
    )


async def add(stores: Stores, model: type[Any], rows: list[dict[str, Any]]) -> list[Any]:
    """Insert ``rows`` and return their primary keys."""
    async with stores.sessions.begin() as session:
        result = await session.execute(insert(model).returning(*model.__table__.primary_key), rows)
        return [row[0] for row in result]


async def remaining(stores: Stores, column: Any, among: list[Any]) -> set[Any]:
    async with stores.sessions() as session:
        return set(await session.scalars(select(column).where(column.in_(among))))


async def a_job(stores: Stores) -> tuple[Mailbox, str]:
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    job, _ = await stores.jobs.enqueue(new_job(mailbox))
    return mailbox, job.id


def job_event(job_id: str, at: dt.datetime) -> dict[str, Any]:
    return {"job_id": job_id, "at": at, "kind": "state", "code": "test"}


def audit(at: dt.datetime) -> dict[str, Any]:
    return {"at": at, "actor": "test", "action": "test.done", "detail": {}}


def outbox(created: dt.datetime, delivered: dt.datetime | None) -> dict[str, Any]:
    return {
        "account_id": "acc_x",
        "kind": "job.sent",
        "payload": {},
        "created_at": created,
        "attempts": 1,
        "next_attempt_at": created,
        "delivered_at": delivered,
    }


async def test_events_past_the_period_are_purged_and_younger_ones_kept(stores: Stores) -> None:
    _, job_id = await a_job(stores)
    old_events = await add(stores, JobEvent, [job_event(job_id, NOW - 91 * DAY)] * 5)
    young_events = await add(stores, JobEvent, [job_event(job_id, NOW - 89 * DAY)])
    old_delivered = await add(stores, OutboxEvent, [outbox(NOW - 95 * DAY, NOW - 91 * DAY)] * 3)
    young_delivered = await add(stores, OutboxEvent, [outbox(NOW - 95 * DAY, NOW - 89 * DAY)])
    undelivered = await add(stores, OutboxEvent, [outbox(NOW - 400 * DAY, None)])

    await retention(stores).purge()

    assert await remaining(stores, JobEvent.id, old_events + young_events) == set(young_events)
    kept = await remaining(stores, OutboxEvent.id, old_delivered + young_delivered + undelivered)
    assert kept == set(young_delivered + undelivered)


async def test_the_audit_trail_loses_only_a_prefix(stores: Stores) -> None:
    old = await add(stores, AuditEvent, [audit(NOW - 100 * DAY)] * 5)
    young = await add(stores, AuditEvent, [audit(NOW - 80 * DAY)])
    # An old entry after a young one (a clock set back): purging it would cut the middle.
    late_old = await add(stores, AuditEvent, [audit(NOW - 100 * DAY)])

    await retention(stores).purge()

    assert await remaining(stores, AuditEvent.id, old + young + late_old) == set(young + late_old)


async def set_job(stores: Stores, job_id: str, state: str, finished: dt.datetime | None) -> None:
    async with stores.sessions.begin() as session:
        await session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(state=state, finished_at=finished, created_at=NOW - 200 * DAY)
        )


async def test_content_goes_after_the_window_only_for_jobs_that_cannot_run_again(
    stores: Stores,
) -> None:
    mailbox, _ = await a_job(stores)
    ended_long_ago = NOW - 8 * DAY
    cases = {
        # state, finished_at → purged?
        "sent": (JobState.SENT, ended_long_ago, True),
        "drafted": (JobState.DRAFTED, ended_long_ago, True),
        "failed": (JobState.FAILED, ended_long_ago, True),
        "cancelled": (JobState.CANCELLED, ended_long_ago, True),
        "sent_recently": (JobState.SENT, NOW - 6 * DAY, False),
        # A settlement may queue an unknown job again: it needs its content.
        "unknown": (JobState.UNKNOWN, NOW - 300 * DAY, False),
        "queued": (JobState.QUEUED, None, False),
        "held": (JobState.HELD, None, False),
        "running": (JobState.RUNNING, None, False),
        # Even if a finished_at were left on a job that runs again, its content stays.
        "queued_after_settlement": (JobState.QUEUED, ended_long_ago, False),
    }
    ids: dict[str, str] = {}
    for name, (state, finished, _) in cases.items():
        job, _ = await stores.jobs.enqueue(new_job(mailbox, key=name))
        await set_job(stores, job.id, state, finished)
        ids[name] = job.id

    await retention(stores).purge()

    kept = await remaining(stores, JobContent.job_id, list(ids.values()))
    assert kept == {ids[name] for name, (_, _, purged) in cases.items() if not purged}
    assert await remaining(stores, Job.id, list(ids.values())) == set(ids.values())  # metadata


async def test_expired_authorizations_go(stores: Stores) -> None:
    mailbox, _ = await a_job(stores)
    state = {"account_id": mailbox.account_id, "mailbox_id": mailbox.id, "sealed_flow": b"x"}
    expired = await add(
        stores,
        OAuthState,
        [
            {**state, "state_sha256": f"{n:064x}", "created_at": NOW, "expires_at": NOW - DAY}
            for n in range(3)
        ],
    )
    pending = await add(
        stores,
        OAuthState,
        [{**state, "state_sha256": "f" * 64, "created_at": NOW, "expires_at": NOW + DAY}],
    )

    await retention(stores).purge()

    assert await remaining(stores, OAuthState.state_sha256, expired + pending) == set(pending)


async def test_a_mailbox_disconnected_long_ago_keeps_only_its_tombstone(stores: Stores) -> None:
    account = await stores.accounts.create_account("acme")
    mailboxes = {}
    for name, state, changed in [
        ("long_gone", MailboxState.DISCONNECTED, NOW - 91 * DAY),
        ("just_gone", MailboxState.DISCONNECTED, NOW - 89 * DAY),
        ("connected", MailboxState.CONNECTED, NOW - 400 * DAY),
    ]:
        mailbox = await stores.connected_mailbox(account.id, address=f"{name}@contoso.example")
        async with stores.sessions.begin() as session:
            await session.execute(
                update(Mailbox)
                .where(Mailbox.id == mailbox.id)
                .values(state=state, updated_at=changed, identity_tenant="t", identity_subject="s")
            )
        mailboxes[name] = mailbox.id

    await retention(stores).purge()

    async with stores.sessions() as session:
        rows = {
            row.id: (row.state, row.address, row.identity_tenant, row.identity_subject)
            for row in await session.scalars(select(Mailbox))
        }
    assert rows[mailboxes["long_gone"]] == ("disconnected", None, None, None)
    assert rows[mailboxes["just_gone"]] == ("disconnected", "just_gone@contoso.example", "t", "s")
    assert rows[mailboxes["connected"]] == ("connected", "connected@contoso.example", "t", "s")


async def test_rows_purged_are_counted_by_kind(stores: Stores) -> None:
    _, job_id = await a_job(stores)
    await add(stores, JobEvent, [job_event(job_id, NOW - 91 * DAY)] * 5)
    await add(stores, OutboxEvent, [outbox(NOW - 95 * DAY, NOW - 91 * DAY)] * 3)
    registry = CollectorRegistry()

    purged = await retention(stores, PrometheusTelemetry(registry)).purge()

    def counted(kind: str) -> float | None:
        return registry.get_sample_value(
            "mailbox_worker_retention_purged_rows_total", {"kind": kind}
        )

    assert (purged["job_events"], purged["outbox_events"]) == (5, 3)
    assert (counted("job_events"), counted("outbox_events")) == (5, 3)
    assert counted("job_contents") is None


async def test_a_stopped_purge_ends_after_one_batch(stores: Stores) -> None:
    _, job_id = await a_job(stores)
    await add(stores, JobEvent, [job_event(job_id, NOW - 91 * DAY)] * 5)
    stop = asyncio.Event()
    stop.set()

    purged = await retention(stores).purge(stop)

    assert purged == {"job_events": 2}


# PostgreSQL only: SQLite has one write lock for the whole file, no row lock to skip.
@pytest.mark.parametrize(
    "migrated_database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
async def test_a_purge_skips_rows_another_transaction_holds(stores: Stores) -> None:
    """On PostgreSQL a batch never waits for a row locked elsewhere (a claim's, an outcome's):
    it leaves it for the next pass."""
    _, job_id = await a_job(stores)
    ids = await add(stores, JobEvent, [job_event(job_id, NOW - 91 * DAY)] * 5)
    async with stores.engine.connect() as holder:
        await holder.execute(select(JobEvent.id).where(JobEvent.id == ids[0]).with_for_update())
        async with asyncio.timeout(10):
            purged = await retention(stores).purge()
        await holder.rollback()

    assert purged["job_events"] == 4
    assert await remaining(stores, JobEvent.id, ids) == {ids[0]}


async def test_the_daemon_purges_by_itself(migrated_database_url: str, tmp_path: Path) -> None:
    port = free_port()
    settings = Settings(
        database=DatabaseSettings(url=migrated_database_url),
        server=ServerSettings(port=port, public_url=f"http://127.0.0.1:{port}"),
        keys=KeySettings(source="file", file=str(tmp_path / "keys.json"), create_if_missing=True),
        retention=RetentionSettings(interval=0.05, events_days=30),
    )
    app = App.build(settings, providers={"microsoft": IdleProvider()})
    try:
        old = await add_through(app, [audit(utcnow() - 31 * DAY)] * 3)
        young = await add_through(app, [audit(utcnow() - 29 * DAY)])
        stop, started = asyncio.Event(), asyncio.Event()
        serving = asyncio.create_task(app.serve(stop, started=started))
        try:
            async with asyncio.timeout(30):
                await started.wait()
                while await audit_count(app, old):
                    await asyncio.sleep(0.05)
            assert (await app.readiness())["retention_loop"]
        finally:
            stop.set()
            await serving
        assert await audit_count(app, young) == 1
        assert app.registry.get_sample_value(
            "mailbox_worker_retention_purged_rows_total", {"kind": "audit_events"}
        ) == len(old)
    finally:
        await app.close()


async def add_through(app: App, rows: list[dict[str, Any]]) -> list[int]:
    async with app.sessions.begin() as session:
        result = await session.execute(insert(AuditEvent).returning(AuditEvent.id), rows)
        return [row[0] for row in result]


async def audit_count(app: App, ids: list[int]) -> int:
    async with app.sessions() as session:
        found = await session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.id.in_(ids))
        )
        return int(found or 0)
