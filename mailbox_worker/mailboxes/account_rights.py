"""An account's data rights (docs/privacy.md PP-7): export, erase, pause and resume.

* **export**: everything held about the account, as one JSON document without a secret
  (``db/account_data.py`` says what is left out). The message content the customer submitted
  is included: it is their own data.
* **pause** / **resume**: while paused, no job of the account's mailboxes is claimed
  (``jobs/claims.py``); the API still accepts jobs, which wait. A job already running when the
  pause lands finishes. Resume wakes the worker. Both are audited.
* **erase**: the account is paused first (so no claim starts meanwhile), every mailbox is
  disconnected through ``MailboxService.disconnect_mailbox`` (provider revocation, tokens and
  data key crypto-erased, pending jobs cancelled), then every row of the account is deleted
  in one transaction, leaving only the ``account.erased`` audit record (ids and counts), and
  the storage scrub runs (docs/erasure.md#erasing-an-account).

The invoicing app is not sent an ``account.erased`` event: an outbox row would be a row of the
account kept after its erasure, and the one who asked for the erasure (the account's own key,
or an operator) has the answer in hand. The account's undelivered events, the
``mailbox.disconnected`` of the erasure among them, are deleted with the rest.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailbox_worker.db.account_data import AccountData
from mailbox_worker.db.erasure import StorageScrubber
from mailbox_worker.errors import NotFound
from mailbox_worker.mailboxes.service import MailboxService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PauseView:
    """Whether an account's processing is paused, and since when."""

    account_id: str
    paused: bool
    paused_at: dt.datetime | None


@dataclass(frozen=True)
class ErasureReport:
    """What an erasure did: the mailboxes disconnected, the rows deleted per table, the
    provider revocations still waiting to be retried, and whether the storage was scrubbed
    at once (else the background loop retries it)."""

    account_id: str
    mailboxes_disconnected: int
    deleted: dict[str, int]
    revocations_pending: int
    scrubbed: bool


class AccountRights:
    """Export, erase, pause and resume one account; ``actor`` is who asked, for the audit."""

    def __init__(
        self,
        data: AccountData,
        mailboxes: MailboxService,
        scrubber: StorageScrubber,
        wake_worker: Callable[[], None] = lambda: None,
    ) -> None:
        self._data = data
        self._mailboxes = mailboxes
        self._scrubber = scrubber
        self._wake_worker = wake_worker

    async def export(self, account_id: str) -> dict[str, Any]:
        """The export document; ``NotFound`` (account_not_found) for an unknown account."""
        document = await self._data.export(account_id)
        if document is None:
            raise NotFound("no such account", code="account_not_found")
        return document

    async def pause(self, account_id: str, actor: str) -> PauseView:
        """Stop claiming the account's jobs (idempotent); ``NotFound`` (account_not_found)."""
        return await self._set_paused(account_id, True, actor)

    async def resume(self, account_id: str, actor: str) -> PauseView:
        """Claim the account's jobs again and wake the worker (idempotent); ``NotFound``."""
        view = await self._set_paused(account_id, False, actor)
        self._wake_worker()
        return view

    async def _set_paused(self, account_id: str, paused: bool, actor: str) -> PauseView:
        change = await self._data.set_paused(account_id, paused, actor)
        if change is None:
            raise NotFound("no such account", code="account_not_found")
        return PauseView(account_id, change.paused_at is not None, change.paused_at)

    async def erase(self, account_id: str, actor: str) -> ErasureReport:
        """Revoke and wipe every mailbox, delete every row of the account but the erasure's
        audit record, scrub the freed storage. ``NotFound`` (account_not_found) for an
        unknown account. Safe to repeat after a failure part-way: each step is idempotent."""
        await self._set_paused(account_id, True, actor)
        mailboxes = await self._data.mailboxes(account_id)
        for mailbox in mailboxes:
            await self._mailboxes.disconnect_mailbox(mailbox, actor)
        detail = {"mailboxes": [mailbox.id for mailbox in mailboxes]}
        deleted = await self._data.delete_everything(account_id, actor, detail)
        if deleted is None:  # erased concurrently
            raise NotFound("no such account", code="account_not_found")
        # Job contents and events are deleted with the account: scrub, so their bytes do not
        # stay in free space (SQLite; on PostgreSQL the rewrite covers the token tables).
        scrubbed = await self._scrubber.after_erasure()
        pending = await self._data.pending_revocations(account_id)
        log.info("account %s erased (%d mailboxes)", account_id, len(mailboxes))
        return ErasureReport(account_id, len(mailboxes), deleted, pending, scrubbed)
