"""Mailbox state changes that the invoicing app must hear about (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

from mailbox_worker.events.outbox import Outbox
from mailbox_worker.states import MailboxState

from .conftest import Stores


async def test_a_lost_grant_is_announced_once_with_the_state_change(stores: Stores) -> None:
    account = await stores.accounts.create_account("acme")
    mailbox = await stores.connected_mailbox(account.id)
    moved = await asyncio.gather(
        *(
            stores.mailboxes.require_consent_again(mailbox, "invalid_grant", f"worker:w{n}")
            for n in range(5)
        )
    )
    assert sorted(moved) == [False, False, False, False, True]
    current = await stores.mailboxes.get(mailbox.id)
    assert current is not None
    assert (current.state, current.state_reason) == (MailboxState.REAUTH_REQUIRED, "invalid_grant")
    [event] = await Outbox(stores.sessions).all()
    assert (event.account_id, event.kind) == (account.id, "mailbox.reauth_required")
    assert event.payload == {
        "mailbox_id": mailbox.id,
        "provider": "microsoft",
        "reason": "invalid_grant",
    }
    audits = [
        audit
        for audit in await stores.accounts.audit_events(account.id)
        if audit.action == "mailbox.reauth_required"
    ]
    assert [audit.target for audit in audits] == [mailbox.id]


async def test_a_mailbox_not_connected_is_not_announced(stores: Stores) -> None:
    account = await stores.accounts.create_account("acme")
    pending = await stores.mailboxes.create(account.id, "google", ["send"], actor="test")
    assert not await stores.mailboxes.require_consent_again(pending, "invalid_grant", "worker:w1")
    assert await Outbox(stores.sessions).all() == []
