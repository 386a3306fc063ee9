"""Scheduled key rotation: closes the door that database copies leave open, with time.

A backup or WAL archive of the database holds data keys wrapped by the KEK that was active
then. While that KEK stays in the key source, the copy still opens, even for a mailbox that
was disconnected (and erased) since. Rotating (a new KEK becomes active, every data key is
re-wrapped under it) and then retiring the old KEK makes every copy taken before the rotation
undecryptable. :class:`KeyRotation` does that on a schedule; each check (``tick``):

1. stamps the times a key store lacks (stores written before times were recorded);
2. adds a new key when the active one is ``rotate_every`` old;
3. re-wraps every data key not under the active key (``TokenVault.rewrap_all``, online);
4. retires each non-active key that was superseded at least ``grace`` ago and that no record
   names any more, counting usage again right before each retirement.

Why the grace period: another process (a worker, the CLI) may have read the active key just
before the rotation and be about to insert a data key wrapped under it. Retiring as soon as
usage reaches zero would make that record unreadable. Such a record lands within moments of
the rotation; any check after it re-wraps it, and the grace (hours) bounds how long a process
may take between reading the active key and committing what it wrapped with it.

Several daemons on one database: each check holds the database lock ``key-rotation``
(:class:`~mailbox_worker.db.locks.DatabaseLocks`), so on PostgreSQL one process rotates at a
time and the others, once they get the lock, find nothing due. SQLite is one process by design;
there the lock only yields; the file key source locks its own read-modify-write cycles
(``flock``), so the CLI and a daemon never lose each other's keys.

The bound this gives (``docs/keys.md``): a disconnected mailbox's tokens are unrecoverable from
any database copy after at most ``rotate_every + grace`` (plus one check interval).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from mailbox_worker.db.outage import is_database_unavailable
from mailbox_worker.periodic import Periodic
from mailbox_worker.telemetry import Telemetry
from mailbox_worker.tokens.keys.port import (
    Clock,
    KeyEncryptionKey,
    KeyInfo,
    KeySource,
    system_clock,
)
from mailbox_worker.tokens.vault import RewrapReport

log = logging.getLogger(__name__)

LOCK_NAME = "key-rotation"
"""The database lock every rotation, re-wrap pass and retirement holds."""

CHECK_INTERVAL = 3600.0
"""Seconds between two checks of the daemon's loop."""


class WrappedDataKeys(Protocol):
    """What rotation needs of the vault (``TokenVault`` conforms)."""

    async def rewrap_all(self) -> RewrapReport: ...

    async def key_usage(self) -> dict[str, int]: ...


class Locks(Protocol):
    """Cross-process mutual exclusion (``DatabaseLocks`` conforms)."""

    def hold(self, key: str) -> AbstractAsyncContextManager[None]: ...


@dataclass(frozen=True)
class RotationSchedule:
    """When keys are due: rotate a key ``rotate_every`` after its creation; retire a
    superseded key ``grace`` after its supersession. Pure: no I/O, no clock of its own."""

    rotate_every: timedelta
    grace: timedelta

    def __post_init__(self) -> None:
        if self.rotate_every <= timedelta(0) or self.grace < timedelta(0):
            raise ValueError("rotate_every must be positive and grace not negative")

    @classmethod
    def from_settings(cls, rotate_every_days: int, grace_hours: float) -> RotationSchedule | None:
        """The schedule of ``keys.rotate_every_days`` / ``keys.retire_grace_hours``; ``None``
        when ``rotate_every_days`` is 0 (scheduled rotation off)."""
        if rotate_every_days == 0:
            return None
        return cls(timedelta(days=rotate_every_days), timedelta(hours=grace_hours))

    def rotation_due_at(self, active: KeyInfo) -> datetime | None:
        """When the active key is to be replaced; ``None`` while its creation is unknown."""
        created = active.times.created_at
        return None if created is None else created + self.rotate_every

    def retirement_due_at(self, key: KeyInfo) -> datetime | None:
        """The earliest a non-active key may be retired (if no record names it);
        ``None`` for the active key and while its supersession is unknown."""
        superseded = key.times.superseded_at
        if key.active or superseded is None:
            return None
        return superseded + self.grace


@dataclass(frozen=True)
class KeyState:
    """One key as ``keys status`` shows it. ``in_store`` is False for a key id that records
    name but the source does not hold (those records cannot be opened)."""

    key_id: str
    active: bool
    in_store: bool
    created_at: datetime | None
    superseded_at: datetime | None
    data_keys: int
    retire_at: datetime | None


@dataclass(frozen=True)
class RotationStatus:
    """Every key with its usage, and the next scheduled rotation (``None``: not scheduled or
    not known yet). ``scheduled`` says whether the daemon rotates at all."""

    keys: tuple[KeyState, ...]
    scheduled: bool
    next_rotation_at: datetime | None


@dataclass(frozen=True)
class TickReport:
    """What one check did."""

    stamped: tuple[str, ...] = ()
    rotated_to: str | None = None
    rewrapped: int = 0
    retired: tuple[str, ...] = ()
    kept_in_use: tuple[str, ...] = ()


class KeyRotation:
    """Rotates, re-wraps and retires KEKs: on a schedule (``run``/``tick``) or by hand
    (``rotate_now``/``retire_now``, for the CLI). Every operation holds :data:`LOCK_NAME`.

    ``schedule`` ``None`` means scheduled rotation is off; ``run`` then returns at once, as it
    does (with one warning) for a read-only key source. ``telemetry`` is told to report the
    active key's age in seconds (NaN while unknown) as of the last operation.
    """

    def __init__(
        self,
        keys: KeySource,
        vault: WrappedDataKeys,
        locks: Locks,
        schedule: RotationSchedule | None,
        *,
        clock: Clock = system_clock,
        telemetry: Telemetry | None = None,
        check_interval: float = CHECK_INTERVAL,
    ) -> None:
        self._keys = keys
        self._vault = vault
        self._locks = locks
        self._schedule = schedule
        self._clock = clock
        self._check_interval = check_interval
        self._telemetry = telemetry
        self._active_created: datetime | None = None
        if telemetry is not None:
            telemetry.active_key_age(self._active_key_age)

    async def run(self, stop: asyncio.Event) -> None:
        """Check every ``check_interval`` seconds until ``stop`` is set; a failed check is
        logged and tried again at the next interval."""
        if self._schedule is None:
            log.info("scheduled key rotation is off (keys.rotate_every_days = 0)")
            return
        if self._keys.read_only:
            log.warning(
                "scheduled key rotation cannot run: the key source is read-only (keys from "
                "MAILBOX_WORKER_KEYS, or a key file in a directory this process cannot write); "
                "rotate by replacing the keys as docs/keys.md says, or set "
                "keys.rotate_every_days = 0 to silence this warning"
            )
            return
        loop = Periodic(
            "key rotation check",
            self.tick,
            self._check_interval,
            name="key_rotation",
            telemetry=self._telemetry,
            database_unavailable=is_database_unavailable,
            logger=log,
        )
        await loop.run(stop)

    async def tick(self) -> TickReport:
        """Do what is due now (see the module docstring); returns what was done."""
        if self._schedule is None:
            return TickReport()
        schedule = self._schedule
        async with self._locks.hold(LOCK_NAME):
            await asyncio.to_thread(self._keys.active_key)  # creates the first key if allowed
            stamped = tuple(await asyncio.to_thread(self._keys.stamp_missing_times))
            for key_id in stamped:
                log.info("key %s: recorded its missing creation/supersession time", key_id)
            now = self._clock()
            active = _active(await asyncio.to_thread(self._keys.key_infos))
            rotated_to = None
            due = schedule.rotation_due_at(active)
            if due is not None and now >= due:
                rotated_to = (await asyncio.to_thread(self._keys.add_key)).key_id
                log.info("key rotation: %s is now active, %s superseded", rotated_to, active.key_id)
            infos = await asyncio.to_thread(self._keys.key_infos)
            self._active_created = _active(infos).times.created_at
            rewrapped = await self._rewrap_stragglers(_active(infos).key_id)
            retired, kept = await self._retire_due(schedule, infos, now)
        return TickReport(stamped, rotated_to, rewrapped, retired, kept)

    async def rotate_now(self) -> tuple[KeyEncryptionKey, RewrapReport]:
        """Add a key (it becomes active) and re-wrap every data key under it, now."""
        async with self._locks.hold(LOCK_NAME):
            new_key = await asyncio.to_thread(self._keys.add_key)
            log.info("key rotation (manual): %s is now active", new_key.key_id)
            infos = await asyncio.to_thread(self._keys.key_infos)
            self._active_created = _active(infos).times.created_at
            return new_key, await self._vault.rewrap_all()

    async def rewrap_now(self) -> RewrapReport:
        """Re-wrap every data key under the source's active key, adding none (after the
        deployment put a new key first in ``MAILBOX_WORKER_KEYS``, say)."""
        async with self._locks.hold(LOCK_NAME):
            return await self._vault.rewrap_all()

    async def retire_now(self, key_id: str) -> int:
        """Retire ``key_id`` now if no record names it, whatever its grace; returns how many
        data keys it still wraps (0: retired). Raises as :meth:`KeySource.retire` does."""
        async with self._locks.hold(LOCK_NAME):
            in_use = (await self._vault.key_usage()).get(key_id, 0)
            if in_use:
                return in_use
            await asyncio.to_thread(self._keys.retire, key_id)
            log.info("key %s retired (manual)", key_id)
            return 0

    async def status(self) -> RotationStatus:
        """Every key held or named by a record, its usage and due times. Changes nothing."""
        infos = await asyncio.to_thread(self._keys.key_infos)
        usage = await self._vault.key_usage()
        states = [
            KeyState(
                key_id=info.key_id,
                active=info.active,
                in_store=True,
                created_at=info.times.created_at,
                superseded_at=info.times.superseded_at,
                data_keys=usage.get(info.key_id, 0),
                retire_at=self._schedule.retirement_due_at(info) if self._schedule else None,
            )
            for info in infos
        ]
        held = {info.key_id for info in infos}
        states += [
            KeyState(key_id, False, False, None, None, count, None)
            for key_id, count in sorted(usage.items())
            if key_id not in held
        ]
        scheduled = self._schedule is not None and not self._keys.read_only
        next_rotation = None
        if scheduled and self._schedule is not None and infos:
            next_rotation = self._schedule.rotation_due_at(_active(infos))
        return RotationStatus(tuple(states), scheduled, next_rotation)

    async def _rewrap_stragglers(self, active_id: str) -> int:
        """Re-wrap under the active key when any record names another; returns how many."""
        usage = await self._vault.key_usage()
        if not any(count for key_id, count in usage.items() if key_id != active_id):
            return 0
        report = await self._vault.rewrap_all()
        log.info("key rotation: re-wrapped %d data keys under %s", report.rewrapped, active_id)
        return report.rewrapped

    async def _retire_due(
        self, schedule: RotationSchedule, infos: list[KeyInfo], now: datetime
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        retired: list[str] = []
        kept: list[str] = []
        for key_id in _due_for_retirement(schedule, infos, now):
            # Counted again right before retiring: a record may have been wrapped under this key
            # since the re-wrap pass (see the module docstring).
            in_use = (await self._vault.key_usage()).get(key_id, 0)
            if in_use:
                log.warning(
                    "key %s is due for retirement but still wraps %d data keys; "
                    "the next check re-wraps them",
                    key_id,
                    in_use,
                )
                kept.append(key_id)
                continue
            await asyncio.to_thread(self._keys.retire, key_id)
            log.info("key %s retired: database copies wrapped under it no longer open", key_id)
            retired.append(key_id)
        return tuple(retired), tuple(kept)

    def _active_key_age(self) -> float:
        if self._active_created is None:
            return math.nan
        return (self._clock() - self._active_created).total_seconds()


def _due_for_retirement(
    schedule: RotationSchedule, infos: list[KeyInfo], now: datetime
) -> Iterator[str]:
    for info in infos:
        due = schedule.retirement_due_at(info)
        if due is not None and now >= due:
            yield info.key_id


def _active(infos: list[KeyInfo]) -> KeyInfo:
    for info in infos:
        if info.active:
            return info
    raise LookupError("the key source lists no active key")  # the sources guarantee one
