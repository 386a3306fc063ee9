from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mailbox_worker.clock import utcnow
from mailbox_worker.config import DatabaseSettings
from mailbox_worker.db.accounts import AccountStore
from mailbox_worker.db.engine import create_engine, create_session_factory
from mailbox_worker.db.erasure import StorageScrubber
from mailbox_worker.db.mailboxes import MailboxStore
from mailbox_worker.db.models import Job, Mailbox
from mailbox_worker.jobs.limits import LimitDefaults
from mailbox_worker.jobs.queue import JobQueue
from mailbox_worker.jobs.store import JobStore

from .api_harness import RunningApi, running_api
from .oauth_world import multi_tenant_world, world  # noqa: F401 - fixtures of the connect tests
from .sandbox_fixtures import http, requests_session, sandbox  # noqa: F401 - sandbox tests


@dataclass
class Stores:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    accounts: AccountStore
    mailboxes: MailboxStore
    jobs: JobStore
    queue: JobQueue
    scrubber: StorageScrubber

    async def connected_mailbox(
        self,
        account_id: str,
        address: str = "billing@contoso.example",
        capabilities: tuple[str, ...] = ("send", "draft"),
    ) -> Mailbox:
        mailbox = await self.mailboxes.create(
            account_id, "microsoft", list(capabilities), actor="test"
        )
        await self.mailboxes.mark_connected(mailbox.id, address, ["Mail.Send", "Mail.ReadWrite"])
        found = await self.mailboxes.get(mailbox.id)
        assert found is not None
        return found


async def expire_leases(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Every job lease ran out a minute ago, as when its worker died or could not renew it."""
    async with sessions.begin() as session:
        await session.execute(
            update(Job)
            .where(Job.lease_expires_at.is_not(None))
            .values(lease_expires_at=utcnow() - dt.timedelta(minutes=1))
        )


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseSettings(url=migrated_database_url))
    yield engine
    await engine.dispose()


NO_MAILBOX_LIMITS = LimitDefaults(max_concurrency=1_000_000, providers={})
"""For the tests of everything but mailbox limits (test_mailbox_limits.py uses real ones)."""


@pytest.fixture
async def stores(engine: AsyncEngine) -> Stores:
    sessions = create_session_factory(engine)
    return Stores(
        engine,
        sessions,
        AccountStore(sessions),
        MailboxStore(sessions),
        JobStore(sessions),
        JobQueue(sessions, limits=NO_MAILBOX_LIMITS),
        StorageScrubber(engine),
    )


# The running API and a caller with a connected mailbox, for the API tests that need only that
# (a test module that needs more defines its own).
@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[RunningApi]:
    async with running_api(tmp_path) as running:
        yield running


@pytest.fixture
async def caller(api: RunningApi) -> tuple[str, str, str]:
    """``(account_id, api_key, connected mailbox id)``."""
    account_id, key = await api.account_with_key()
    mailbox = await api.connected_mailbox(account_id)
    return account_id, key, mailbox.id
