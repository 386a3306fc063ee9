"""The tamper-evident audit trail (docs/privacy.md PP-3; ``db/audit_chain.py``), on both
backends: normal activity verifies; an edited, deleted or reordered sealed entry is named;
the retention purge and an account's erasure, which remove a prefix or a whole chain, still
verify."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select, update

from mailbox_worker.clock import utcnow
from mailbox_worker.db.account_data import AccountData
from mailbox_worker.db.audit_chain import AuditChain
from mailbox_worker.db.locks import DatabaseLocks
from mailbox_worker.db.models import AuditEvent
from mailbox_worker.db.retention import Retention, RetentionSettings

from .conftest import Stores

DAY = dt.timedelta(days=1)


def chain(stores: Stores) -> AuditChain:
    """A sealer that seals every committed entry at once (no settling time)."""
    return AuditChain(stores.engine, DatabaseLocks(stores.engine), settle=dt.timedelta(0))


async def activity(stores: Stores) -> tuple[str, str]:
    """Two accounts with keys and mailboxes, and one entry without an account."""
    first = await stores.accounts.create_account("contoso")
    second = await stores.accounts.create_account("fabrikam")
    for account in (first, second):
        await stores.accounts.create_api_key(account.id, "api", frozenset({"jobs:read"}))
        await stores.connected_mailbox(account.id)
    await stores.accounts.audit("daemon", None, "policy.violation", None, {"rule": "x"})
    return first.id, second.id


async def entry_ids(stores: Stores, account_id: str | None) -> list[int]:
    condition = (
        AuditEvent.account_id.is_(None)
        if account_id is None
        else AuditEvent.account_id == account_id
    )
    async with stores.sessions() as session:
        query = select(AuditEvent.id).where(condition).order_by(AuditEvent.chain_position)
        return list((await session.scalars(query)).all())


async def test_normal_activity_verifies_chained_per_account(stores: Stores) -> None:
    first, second = await activity(stores)
    audit = chain(stores)
    sealed = await audit.seal()
    await stores.accounts.audit("cli", first, "support.access", "job_x", {})
    sealed += await audit.seal()

    verification = await audit.verify()

    assert verification.ok, verification.broken
    assert verification.entries == sealed
    assert verification.chains == 3
    assert verification.unsealed == 0
    assert len(await entry_ids(stores, first)) > len(await entry_ids(stores, second))


async def test_entries_younger_than_the_settling_time_wait(stores: Stores) -> None:
    await activity(stores)
    audit = AuditChain(stores.engine, DatabaseLocks(stores.engine), clock=utcnow)

    assert await audit.seal() == 0
    assert (await audit.verify()).unsealed > 0


async def test_an_edited_sealed_entry_is_named(stores: Stores) -> None:
    first, _ = await activity(stores)
    audit = chain(stores)
    await audit.seal()
    edited = (await entry_ids(stores, first))[1]
    async with stores.sessions.begin() as session:
        await session.execute(
            update(AuditEvent).where(AuditEvent.id == edited).values(detail={"forged": True})
        )

    broken = (await audit.verify()).broken

    assert broken is not None
    assert broken.entry_id == edited
    assert "hash does not match" in broken.reason


async def test_a_deleted_middle_entry_is_named_by_its_successor(stores: Stores) -> None:
    first, _ = await activity(stores)
    audit = chain(stores)
    await audit.seal()
    ids = await entry_ids(stores, first)
    async with stores.sessions.begin() as session:
        await session.execute(delete(AuditEvent).where(AuditEvent.id == ids[1]))

    broken = (await audit.verify()).broken

    assert broken is not None
    assert broken.entry_id == ids[2]
    assert broken.account_id == first


async def test_reordered_entries_are_named(stores: Stores) -> None:
    first, _ = await activity(stores)
    audit = chain(stores)
    await audit.seal()
    ids = await entry_ids(stores, first)
    async with stores.sessions.begin() as session:
        positions = {
            row.id: row.chain_position
            for row in await session.execute(
                select(AuditEvent.id, AuditEvent.chain_position).where(AuditEvent.id.in_(ids[:2]))
            )
        }
        await session.execute(
            update(AuditEvent).where(AuditEvent.id == ids[0]).values(chain_position=-1)
        )
        await session.execute(
            update(AuditEvent)
            .where(AuditEvent.id == ids[1])
            .values(chain_position=positions[ids[0]])
        )
        await session.execute(
            update(AuditEvent)
            .where(AuditEvent.id == ids[0])
            .values(chain_position=positions[ids[1]])
        )

    broken = (await audit.verify()).broken

    assert broken is not None
    assert broken.entry_id in ids[:2]


async def test_the_retention_purge_of_the_oldest_entries_still_verifies(stores: Stores) -> None:
    first, second = await activity(stores)
    audit = chain(stores)
    await audit.seal()
    cutoff = (await entry_ids(stores, first))[2]
    async with stores.sessions.begin() as session:
        await session.execute(
            update(AuditEvent).where(AuditEvent.id <= cutoff).values(at=utcnow() - 100 * DAY)
        )
    await Retention(stores.sessions, RetentionSettings(batch_size=2, pause=0)).purge()
    async with stores.sessions() as session:
        assert await session.get(AuditEvent, cutoff) is None
    await stores.accounts.audit("cli", first, "support.access", "job_x", {})
    await stores.accounts.audit("cli", second, "support.access", "job_y", {})
    await audit.seal()

    verification = await audit.verify()

    assert verification.ok, verification.broken


async def test_an_erased_account_leaves_a_verifiable_trail(stores: Stores) -> None:
    first, second = await activity(stores)
    audit = chain(stores)
    await audit.seal()
    await stores.accounts.audit("cli", first, "support.access", "job_x", {})  # not sealed yet
    await AccountData(stores.sessions).delete_everything(first, "test", {})
    await stores.accounts.audit("system", first, "mailbox.revocation", "mbx_x", {})
    await stores.accounts.audit("cli", second, "support.access", "job_y", {})
    await audit.seal()

    verification = await audit.verify()

    assert verification.ok, verification.broken
    async with stores.sessions() as session:
        actions = list(
            await session.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.account_id == first)
                .order_by(AuditEvent.chain_position)
            )
        )
    assert actions == ["account.erased", "mailbox.revocation"]
