"""``MailboxSnapshots`` (jobs/store.py): the mailboxes an API process read last, kept for a
bounded time whatever happens next (docs/erasure.md)."""

from __future__ import annotations

import asyncio

from mailbox_worker.db.models import Mailbox
from mailbox_worker.jobs.store import MailboxSnapshots


async def test_a_snapshot_is_dropped_once_its_time_is_up() -> None:
    """What a process holds of a mailbox's row lasts ``seconds`` after the read, whether or
    not anything asks for it again (docs/erasure.md)."""
    snapshots = MailboxSnapshots(seconds=0.05)
    mailbox = Mailbox(id="mbx_1", account_id="acc_1", address="billing@contoso.example")
    snapshots.keep("acc_1", [mailbox])
    assert snapshots.get("acc_1", "mbx_1") is mailbox
    assert snapshots.get("acc_2", "mbx_1") is None  # another account's mailbox is not given
    await asyncio.sleep(0.2)
    assert len(snapshots) == 0
    assert snapshots.get("acc_1", "mbx_1") is None


async def test_a_snapshot_read_again_is_kept_from_its_new_read() -> None:
    snapshots = MailboxSnapshots(seconds=0.15)
    first = Mailbox(id="mbx_1", account_id="acc_1", address="billing@contoso.example")
    second = Mailbox(id="mbx_1", account_id="acc_1", address="ap@contoso.example")
    snapshots.keep("acc_1", [first])
    await asyncio.sleep(0.1)
    snapshots.keep("acc_1", [second])  # the first's timer must not drop the second
    await asyncio.sleep(0.1)
    assert snapshots.get("acc_1", "mbx_1") is second
    snapshots.forget("mbx_1")
    assert len(snapshots) == 0
