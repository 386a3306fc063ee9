"""Scheduled key rotation on real databases (SQLite and PostgreSQL) with the file key source.

Time is a fake clock shared by the key source and the rotation; nothing waits for real time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from mailbox_worker.config import DatabaseSettings
from mailbox_worker.db.engine import create_engine, create_session_factory
from mailbox_worker.db.erasure import StorageScrubber
from mailbox_worker.db.locks import DatabaseLocks
from mailbox_worker.errors import KeyUnavailable
from mailbox_worker.prometheus import PrometheusTelemetry
from mailbox_worker.tokens.keys.env_source import EnvKeySource
from mailbox_worker.tokens.keys.file_source import FileKeySource
from mailbox_worker.tokens.keys.port import KeyEncryptionKey, KeyInfo, KeySource
from mailbox_worker.tokens.rotation import KeyRotation, RotationSchedule, TickReport
from mailbox_worker.tokens.vault import RewrapReport, TokenVault

from .conftest import Stores

START = datetime(2025, 1, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
SCHEDULE = RotationSchedule(rotate_every=30 * DAY, grace=24 * HOUR)
SECRET = b'{"refresh_token": "1.AQ-very-secret-refresh-token-value"}'
AGE = "mailbox_worker_active_key_age_seconds"
IDS = ("prod-key-1", "kek-20250101-0a0b0c0d")


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


@dataclass
class World:
    stores: Stores
    clock: FakeClock
    key_file: Path
    keys: FileKeySource
    vault: TokenVault
    rotation: KeyRotation
    registry: CollectorRegistry

    async def mailbox_with_tokens(self, vault: TokenVault | None = None) -> str:
        account = await self.stores.accounts.create_account("acme")
        mailbox_id = (await self.stores.connected_mailbox(account.id)).id
        await (vault or self.vault).store_tokens(mailbox_id, SECRET, expected_version=None)
        return mailbox_id

    async def readable(self, mailbox_id: str) -> bool:
        """Whether a process starting now (no cached data key) opens the mailbox's tokens."""
        fresh = TokenVault(self.stores.sessions, FileKeySource(self.key_file), self.stores.scrubber)
        loaded = await fresh.load_tokens(mailbox_id)
        return loaded is not None and loaded.plaintext == SECRET

    async def tick_at(self, offset: timedelta) -> TickReport:
        self.clock.now = START + offset
        return await self.rotation.tick()


@pytest.fixture
async def world(stores: Stores, tmp_path: Path) -> World:
    clock = FakeClock()
    key_file = tmp_path / "keys.json"
    keys = FileKeySource(key_file, create_if_missing=True, clock=clock)
    vault = TokenVault(stores.sessions, keys, stores.scrubber)
    registry = CollectorRegistry()
    rotation = KeyRotation(
        keys,
        vault,
        DatabaseLocks(stores.engine),
        SCHEDULE,
        clock=clock,
        telemetry=PrometheusTelemetry(registry),
    )
    return World(stores, clock, key_file, keys, vault, rotation, registry)


async def test_nothing_rotates_before_rotate_every_days(world: World) -> None:
    mailbox_id = await world.mailbox_with_tokens()
    first = world.keys.active_key().key_id
    report = await world.tick_at(30 * DAY - timedelta(seconds=1))
    assert report == TickReport()
    assert world.keys.key_ids() == [first]
    assert await world.vault.key_usage() == {first: 1}
    assert await world.readable(mailbox_id)


async def test_a_due_key_is_replaced_and_every_data_key_rewrapped(world: World) -> None:
    mailboxes = [await world.mailbox_with_tokens() for _ in range(3)]
    first = world.keys.active_key().key_id
    report = await world.tick_at(30 * DAY)
    new = world.keys.active_key().key_id
    assert report.rotated_to == new != first
    assert report.rewrapped == 3
    assert await world.vault.key_usage() == {new: 3}
    [old_info, new_info] = world.keys.key_infos()
    assert old_info.times.superseded_at == new_info.times.created_at == START + 30 * DAY
    assert world.registry.get_sample_value(AGE) == 0
    world.clock.advance(HOUR)
    assert world.registry.get_sample_value(AGE) == 3600
    for mailbox_id in mailboxes:
        assert await world.readable(mailbox_id)


async def test_the_old_key_is_retired_only_after_the_grace_period(world: World) -> None:
    mailbox_id = await world.mailbox_with_tokens()
    first = world.keys.active_key().key_id
    await world.tick_at(30 * DAY)
    within_grace = await world.tick_at(30 * DAY + 24 * HOUR - timedelta(seconds=1))
    assert within_grace.retired == ()
    assert first in world.keys.key_ids()
    after_grace = await world.tick_at(30 * DAY + 24 * HOUR)
    assert after_grace.retired == (first,)
    assert world.keys.key_ids() == [world.keys.active_key().key_id]
    assert await world.readable(mailbox_id)
    with pytest.raises(KeyUnavailable):
        FileKeySource(world.key_file).get(first)


class StaleActiveKey:
    """A key source as another process saw it just before the rotation: it still takes the
    old key for the active one; everything else is the real source."""

    read_only = False

    def __init__(self, source: FileKeySource, stale: KeyEncryptionKey) -> None:
        self._source = source
        self._stale = stale

    def active_key(self) -> KeyEncryptionKey:
        return self._stale

    def get(self, key_id: str) -> KeyEncryptionKey:
        return self._source.get(key_id)

    def key_ids(self) -> list[str]:
        return self._source.key_ids()

    def add_key(self) -> KeyEncryptionKey:
        return self._source.add_key()

    def retire(self, key_id: str) -> None:
        self._source.retire(key_id)

    def key_infos(self) -> list[KeyInfo]:
        return self._source.key_infos()

    def stamp_missing_times(self) -> list[str]:
        return self._source.stamp_missing_times()


async def test_a_data_key_wrapped_under_the_old_key_after_the_rotation_stays_readable(
    world: World,
) -> None:
    old = world.keys.active_key()
    await world.mailbox_with_tokens()
    await world.tick_at(30 * DAY)
    # The other process wraps a new mailbox's data key under the key it read before.
    late_vault = TokenVault(
        world.stores.sessions, StaleActiveKey(world.keys, old), world.stores.scrubber
    )
    late = await world.mailbox_with_tokens(late_vault)
    assert (await world.vault.key_usage())[old.key_id] == 1
    assert await world.readable(late)  # the old key was not retired at the rotation
    in_grace = await world.tick_at(30 * DAY + HOUR)
    assert (in_grace.rewrapped, in_grace.retired) == (1, ())
    after_grace = await world.tick_at(30 * DAY + 24 * HOUR)
    assert after_grace.retired == (old.key_id,)
    assert await world.readable(late)


class LateWrapDuringRewrap:
    """The vault, except that right after each re-wrap pass another process wraps one more
    data key under the old key (the last moment a race can land before retirement)."""

    def __init__(self, vault: TokenVault, race: TokenVault, world: World) -> None:
        self._vault = vault
        self._race = race
        self._world = world
        self.late: list[str] = []

    async def rewrap_all(self) -> RewrapReport:
        report = await self._vault.rewrap_all()
        if not self.late:
            self.late.append(await self._world.mailbox_with_tokens(self._race))
        return report

    async def key_usage(self) -> dict[str, int]:
        return await self._vault.key_usage()


async def test_usage_is_counted_again_right_before_retiring(world: World) -> None:
    old = world.keys.active_key()
    await world.mailbox_with_tokens()
    await world.tick_at(30 * DAY)
    stale = TokenVault(
        world.stores.sessions, StaleActiveKey(world.keys, old), world.stores.scrubber
    )
    await world.mailbox_with_tokens(stale)  # gives the next check something to re-wrap
    racing = LateWrapDuringRewrap(world.vault, stale, world)
    rotation = KeyRotation(
        world.keys, racing, DatabaseLocks(world.stores.engine), SCHEDULE, clock=world.clock
    )
    world.clock.now = START + 31 * DAY
    kept = await rotation.tick()
    assert (kept.retired, kept.kept_in_use) == ((), (old.key_id,))
    assert await world.readable(racing.late[0])
    retired = await rotation.tick()
    assert retired.retired == (old.key_id,)
    assert await world.readable(racing.late[0])


async def test_keys_from_an_old_file_get_a_grace_from_the_first_check(
    world: World, tmp_path: Path
) -> None:
    # An older mailbox-worker wrote this file: no times at all; the active key's id is dated.
    legacy = tmp_path / "legacy.json"
    material = {kid: base64.b64encode(bytes([n]) * 32).decode() for n, kid in enumerate(IDS)}
    legacy.write_text(json.dumps({"active": IDS[1], "keys": material}))
    legacy.chmod(0o600)
    keys = FileKeySource(legacy, clock=world.clock)
    vault = TokenVault(world.stores.sessions, keys, world.stores.scrubber)
    rotation = KeyRotation(
        keys, vault, DatabaseLocks(world.stores.engine), SCHEDULE, clock=world.clock
    )
    world.clock.now = START + 10 * DAY
    first_check = await rotation.tick()
    assert first_check == TickReport(stamped=IDS)
    assert (await rotation.status()).next_rotation_at == datetime(2025, 1, 31, tzinfo=UTC)
    world.clock.advance(24 * HOUR)
    assert (await rotation.tick()).retired == (IDS[0],)


async def test_status_shows_every_key_its_usage_and_what_is_due(world: World) -> None:
    await world.mailbox_with_tokens()
    first = world.keys.active_key().key_id
    await world.tick_at(30 * DAY)
    status = await world.rotation.status()
    assert status.scheduled
    assert status.next_rotation_at == START + 60 * DAY
    by_id = {state.key_id: state for state in status.keys}
    assert by_id[first].retire_at == START + 31 * DAY
    assert (by_id[first].active, by_id[first].data_keys) == (False, 0)
    new = world.keys.active_key().key_id
    assert (by_id[new].active, by_id[new].data_keys, by_id[new].retire_at) == (True, 1, None)


async def test_the_loop_rotates_and_retires_until_stopped(world: World) -> None:
    mailbox_id = await world.mailbox_with_tokens()
    first = world.keys.active_key().key_id
    rotation = KeyRotation(
        world.keys,
        world.vault,
        DatabaseLocks(world.stores.engine),
        SCHEDULE,
        clock=world.clock,
        check_interval=0.01,
    )
    stop = asyncio.Event()
    world.clock.now = START + 30 * DAY
    loop = asyncio.create_task(rotation.run(stop))
    async with asyncio.timeout(20):
        while len(world.keys.key_ids()) < 2:
            await asyncio.sleep(0.01)
        world.clock.advance(24 * HOUR)
        while first in world.keys.key_ids():
            await asyncio.sleep(0.01)
        stop.set()
        await loop
    assert len(world.keys.key_ids()) == 1
    assert await world.readable(mailbox_id)


# A file-level copy of SQLite is the backup modelled here; a PostgreSQL backup holds the same
# wrapped keys, which the same retirement makes unreadable.
@pytest.mark.parametrize("migrated_database_url", ["sqlite"], indirect=True)
async def test_a_database_copy_taken_before_the_rotation_no_longer_opens(
    world: World, tmp_path: Path
) -> None:
    assert world.stores.engine.dialect.name == "sqlite"
    mailbox_id = await world.mailbox_with_tokens()
    database = Path(world.stores.engine.url.database or "")
    backup = tmp_path / "backup.db"
    for suffix in ("", "-wal"):  # the file and its write-ahead log, as a file-level backup
        if Path(f"{database}{suffix}").exists():
            shutil.copyfile(f"{database}{suffix}", f"{backup}{suffix}")
    copy_engine = create_engine(DatabaseSettings(url=f"sqlite+aiosqlite:///{backup}"))
    try:
        copy_sessions = create_session_factory(copy_engine)

        async def open_copy() -> bytes | None:
            vault = TokenVault(
                copy_sessions, FileKeySource(world.key_file), StorageScrubber(copy_engine)
            )
            loaded = await vault.load_tokens(mailbox_id)
            return None if loaded is None else loaded.plaintext

        assert await open_copy() == SECRET  # the door this closes
        await world.vault.erase(mailbox_id)  # the mailbox is disconnected
        await world.tick_at(30 * DAY)
        assert await open_copy() == SECRET  # still open during the grace period
        await world.tick_at(31 * DAY)
        with pytest.raises(KeyUnavailable):
            await open_copy()
    finally:
        await copy_engine.dispose()


@pytest.mark.parametrize("source", ["env", "off"])
async def test_the_loop_does_not_run_without_a_writable_source_or_schedule(
    stores: Stores, caplog: pytest.LogCaptureFixture, source: str
) -> None:
    keys: KeySource = EnvKeySource("k1:" + "A" * 43 + "=")
    schedule = SCHEDULE if source == "env" else None
    rotation = KeyRotation(
        keys,
        TokenVault(stores.sessions, keys, stores.scrubber),
        DatabaseLocks(stores.engine),
        schedule,
    )
    with caplog.at_level(logging.INFO, logger="mailbox_worker.tokens.rotation"):
        async with asyncio.timeout(5):
            await rotation.run(asyncio.Event())  # returns at once: it would otherwise loop
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if source == "env":
        assert len(warnings) == 1
        assert "MAILBOX_WORKER_KEYS" in warnings[0] and "docs/keys.md" in warnings[0]
    else:
        assert warnings == []
    assert (await rotation.status()).scheduled is False


async def test_age_is_unknown_before_the_first_check(world: World) -> None:
    value = world.registry.get_sample_value(AGE)
    assert value is not None and math.isnan(value)


@pytest.fixture
async def two_daemons(world: World) -> AsyncIterator[KeyRotation]:
    """A second daemon on the same database and key file, with engine and source of its own."""
    assert world.stores.engine.dialect.name == "postgresql"
    engine = create_engine(DatabaseSettings(url=world.stores.engine.url.render_as_string(False)))
    keys = FileKeySource(world.key_file, clock=world.clock)
    vault = TokenVault(create_session_factory(engine), keys, StorageScrubber(engine))
    yield KeyRotation(keys, vault, DatabaseLocks(engine), SCHEDULE, clock=world.clock)
    await engine.dispose()


# Several daemons share a database only on PostgreSQL.
@pytest.mark.parametrize(
    "migrated_database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
async def test_two_daemons_rotate_once_between_them(world: World, two_daemons: KeyRotation) -> None:
    await world.mailbox_with_tokens()
    world.keys.active_key()
    world.clock.now = START + 30 * DAY
    reports = await asyncio.gather(world.rotation.tick(), two_daemons.tick())
    assert len([r for r in reports if r.rotated_to]) == 1
    assert len(world.keys.key_ids()) == 2


async def test_env_keys_rotate_by_replacing_the_variable_then_rewrapping(stores: Stores) -> None:
    old, new = "k1:" + base64.b64encode(bytes(32)).decode(), "k2:" + "B" * 43 + "="
    before = EnvKeySource(old)
    account = await stores.accounts.create_account("acme")
    mailbox_id = (await stores.connected_mailbox(account.id)).id
    vault = TokenVault(stores.sessions, before, stores.scrubber)
    await vault.store_tokens(mailbox_id, SECRET, expected_version=None)
    both = EnvKeySource(f"{new},{old}")  # step 1: the new key first, the old one kept
    rotation = KeyRotation(
        both,
        TokenVault(stores.sessions, both, stores.scrubber),
        DatabaseLocks(stores.engine),
        SCHEDULE,
    )
    report = await rotation.rewrap_now()  # step 2: `mailbox-worker keys rewrap`
    assert report.rewrapped == 1
    after = EnvKeySource(new)  # step 3: the old key removed from the variable
    loaded = await TokenVault(stores.sessions, after, stores.scrubber).load_tokens(mailbox_id)
    assert loaded is not None and loaded.plaintext == SECRET
