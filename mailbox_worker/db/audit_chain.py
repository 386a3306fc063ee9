"""The tamper-evident audit trail: audit entries sealed into hash chains, and their check.

One chain per account (entries without an account form one chain of their own), so that the
retention purge (the oldest entries, as a prefix: docs/retention.md) and an account's erasure
(all its entries but the ``account.erased`` record: docs/erasure.md) remove only a chain's
beginning or a whole chain, and never a link in the middle of one.

Entries are added unsealed (``chain_position``, ``previous_hash`` and ``entry_hash`` None) by
many concurrent transactions; hashing them there would fork a chain. ``seal`` gives each
unsealed entry, in id order and one process at a time (the database lock ``audit-seal``),
the next position of its chain, the hash of the chain's last sealed entry as
``previous_hash``, and ``entry_hash = SHA-256(previous_hash ‖ canonical JSON of the entry)``
(``entry_hash``). Sealed entries never change. Only entries at least ``settle`` old are
sealed, so that a slow transaction's entry, committed after a later one, still takes its
place in id order.

``verify`` recomputes every chain in position order from its oldest remaining entry (whose
``previous_hash`` it takes as the anchor) and reports the first broken link: an entry whose
hash does not match its fields, a missing position, or one that does not follow its
predecessor's hash.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Row, Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailbox_worker.clock import Clock, utcnow
from mailbox_worker.db.locks import DatabaseLocks
from mailbox_worker.db.models import AuditEvent

Entry = Row[*tuple[Any, ...]]
"""One audit entry as ``_FIELDS`` reads it."""
GENESIS = "0" * 64
"""The ``previous_hash`` of a chain's first entry."""
LOCK_KEY = "audit-seal"
SEAL_BATCH = 500
DEFAULT_SETTLE = dt.timedelta(seconds=60)

_table = cast(Table, AuditEvent.__table__)
_FIELDS = (
    _table.c.id,
    _table.c.at,
    _table.c.actor,
    _table.c.account_id,
    _table.c.action,
    _table.c.target,
    _table.c.detail,
    _table.c.chain_position,
    _table.c.previous_hash,
    _table.c.entry_hash,
)


@dataclass(frozen=True)
class BrokenLink:
    """The first entry at which a chain does not verify, and why."""

    entry_id: int
    account_id: str | None
    reason: str

    def __str__(self) -> str:
        chain = self.account_id or "(no account)"
        return f"audit entry {self.entry_id} (chain {chain}): {self.reason}"


@dataclass(frozen=True)
class Verification:
    """What ``verify`` found: sealed ``entries`` in ``chains``, entries not sealed yet, and
    the first broken link (None when every chain holds)."""

    entries: int
    chains: int
    unsealed: int
    broken: BrokenLink | None

    @property
    def ok(self) -> bool:
        return self.broken is None


def entry_hash(
    *,
    entry_id: int,
    at: dt.datetime,
    actor: str,
    account_id: str | None,
    action: str,
    target: str | None,
    detail: dict[str, Any],
    position: int,
    previous_hash: str,
) -> str:
    """SHA-256 (hex) of ``previous_hash`` followed by the entry's canonical JSON (sorted
    keys, no spaces, UTF-8, the time in UTC to the microsecond)."""
    canonical = json.dumps(
        {
            "id": entry_id,
            "at": at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "actor": actor,
            "account_id": account_id,
            "action": action,
            "target": target,
            "detail": detail,
            "position": position,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256((previous_hash + canonical).encode()).hexdigest()


def _row_hash(row: Entry, position: int, previous_hash: str) -> str:
    return entry_hash(
        entry_id=row.id,
        at=row.at,
        actor=row.actor,
        account_id=row.account_id,
        action=row.action,
        target=row.target,
        detail=row.detail,
        position=position,
        previous_hash=previous_hash,
    )


class AuditChain:
    """Seals new audit entries into their chains and verifies the chains."""

    def __init__(
        self,
        engine: AsyncEngine,
        locks: DatabaseLocks,
        clock: Clock = utcnow,
        *,
        settle: dt.timedelta = DEFAULT_SETTLE,
    ) -> None:
        self._engine = engine
        self._locks = locks
        self._clock = clock
        self._settle = settle

    async def seal(self) -> int:
        """Seal every unsealed entry at least ``settle`` old, in id order, under the
        ``audit-seal`` lock (one process at a time); returns how many were sealed."""
        sealed = 0
        while True:
            count = await self._seal_batch()
            sealed += count
            if count < SEAL_BATCH:
                return sealed

    async def _seal_batch(self) -> int:
        cutoff = self._clock() - self._settle
        async with self._locks.hold_connection(LOCK_KEY) as held:
            if held is not None:
                return await self._seal_on(held, cutoff)
            async with self._engine.begin() as connection:
                return await self._seal_on(connection, cutoff)

    async def _seal_on(self, connection: AsyncConnection, cutoff: dt.datetime) -> int:
        unsealed = (
            await connection.execute(
                select(*_FIELDS)
                .where(_table.c.chain_position.is_(None), _table.c.at <= cutoff)
                .order_by(_table.c.id)
                .limit(SEAL_BATCH)
            )
        ).all()
        heads: dict[str | None, tuple[int, str]] = {}
        for row in unsealed:
            if row.account_id not in heads:
                heads[row.account_id] = await _head(connection, row.account_id)
            last_position, last_hash = heads[row.account_id]
            position = last_position + 1
            digest = _row_hash(row, position, last_hash)
            result = await connection.execute(
                update(_table)
                .where(_table.c.id == row.id, _table.c.chain_position.is_(None))
                .values(chain_position=position, previous_hash=last_hash, entry_hash=digest)
            )
            if getattr(result, "rowcount", 0):  # else erased or purged meanwhile
                heads[row.account_id] = (position, digest)
        return len(unsealed)

    async def verify(self) -> Verification:
        """Recompute every chain (module docstring); the first broken link, if any."""
        async with self._engine.connect() as connection:
            unsealed = await connection.scalar(
                select(func.count()).select_from(_table).where(_table.c.chain_position.is_(None))
            )
            rows = (
                await connection.execute(
                    select(*_FIELDS)
                    .where(_table.c.chain_position.is_not(None))
                    .order_by(_table.c.account_id, _table.c.chain_position)
                )
            ).all()
        chains = 0
        broken: BrokenLink | None = None
        previous: Entry | None = None
        for row in rows:
            first = previous is None or previous.account_id != row.account_id
            if first:
                chains += 1
            if broken is None:
                broken = _check(row, None if first else previous)
            previous = row
        return Verification(len(rows), chains, int(unsealed or 0), broken)


async def _head(connection: AsyncConnection, account_id: str | None) -> tuple[int, str]:
    """The position and hash of the chain's last sealed entry; (0, ``GENESIS``) if none."""
    chain = (
        _table.c.account_id.is_(None) if account_id is None else _table.c.account_id == account_id
    )
    row = (
        await connection.execute(
            select(_table.c.chain_position, _table.c.entry_hash)
            .where(chain, _table.c.chain_position.is_not(None))
            .order_by(_table.c.chain_position.desc())
            .limit(1)
        )
    ).first()
    if row is None or row.entry_hash is None:
        return 0, GENESIS
    return int(row.chain_position), str(row.entry_hash)


def _check(row: Entry, previous: Entry | None) -> BrokenLink | None:
    """Why ``row`` breaks its chain after ``previous`` (None: the chain's oldest remaining
    entry, anchored on its own ``previous_hash``), or None when it holds."""
    if previous is not None:
        if row.chain_position != previous.chain_position + 1:
            return BrokenLink(
                row.id,
                row.account_id,
                f"position {row.chain_position} follows position {previous.chain_position}: "
                "entries are missing or out of order",
            )
        if row.previous_hash != previous.entry_hash:
            return BrokenLink(
                row.id, row.account_id, f"does not follow entry {previous.id} (hash mismatch)"
            )
    if row.previous_hash is None or row.entry_hash != _row_hash(
        row, row.chain_position, row.previous_hash
    ):
        return BrokenLink(row.id, row.account_id, "its hash does not match its content")
    return None


def describe(verification: Verification) -> Sequence[str]:
    """The lines ``audit verify`` prints."""
    if verification.broken is not None:
        return [f"broken: {verification.broken}"]
    lines = [f"ok, {verification.entries} entries in {verification.chains} chains"]
    if verification.unsealed:
        lines.append(f"({verification.unsealed} newer entries not sealed yet)")
    return lines
