"""An account's data rights (docs/privacy.md PP-7) through the real App beside the sandbox, on
SQLite and PostgreSQL: the export holds everything but no secret; the erasure leaves no row
of the account but its ``account.erased`` audit record and the sandbox shows the grant
revoked; a paused account's jobs wait while another account's flow.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from typing import Any

from sqlalchemy import select

from mailbox_worker.accounts import Principal
from mailbox_worker.db.accounts import PERMISSIONS
from mailbox_worker.db.models import Base

from .oauth_world import World
from .test_connect_google import grants
from .test_erasure import token_secrets

GOOGLE_USER = "invoices@fabrikam.example"
LEASE = dt.timedelta(minutes=1)


async def rows_mentioning(world: World, needles: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """Every row of every table in which some column's value mentions one of ``needles``."""
    found = []
    async with world.app.sessions() as session:
        for table in Base.metadata.sorted_tables:
            for row in (await session.execute(select(table))).mappings():
                text = " ".join(str(value) for value in row.values())
                if any(needle in text for needle in needles):
                    found.append((table.name, dict(row)))
    return found


async def test_export_then_erase_leaves_only_the_erasure_record_and_revokes_grants(
    world: World,
) -> None:
    app = world.app
    account_id = world.principal.account_id
    google = await world.connected("google", login=GOOGLE_USER)
    microsoft = await world.connected("microsoft")
    jobs = [
        await world.enqueue(google.id, **{"from": {"address": GOOGLE_USER}}),
        await world.enqueue(microsoft.id, reference="INV-0042"),
    ]
    issued = await app.accounts.create_api_key(account_id, "admin", PERMISSIONS)
    await app.accounts.set_return_origins(account_id, ["https://invoicing.example"], "test")
    secrets = {issued.secret, hashlib.sha256(issued.secret.encode()).hexdigest()}
    for mailbox in (google, microsoft):
        stored = await app.vault.load_tokens(mailbox.id)
        assert stored is not None
        secrets |= {token.decode() for token in token_secrets(stored.plaintext)}
    # Another account, whose rows the erasure must leave alone.
    other = await app.accounts.create_account("another")
    other_world = dataclasses.replace(
        world, principal=Principal(other.id, "other-key", frozenset({"mailboxes:write"}))
    )
    other_mailbox = await other_world.connected("google", login="billing@fabrikam.example")
    other_job = await other_world.enqueue(
        other_mailbox.id, **{"from": {"address": "billing@fabrikam.example"}}
    )

    export = await app.account_rights.export(account_id)

    dumped = json.dumps(export)
    assert not [secret for secret in secrets if secret in dumped]
    assert export["account"]["id"] == account_id
    assert export["account"]["return_origins"] == ["https://invoicing.example"]
    assert {m["id"] for m in export["mailboxes"]} == {google.id, microsoft.id}
    assert all(m["tokens_stored"] for m in export["mailboxes"])
    assert {m["address"] for m in export["mailboxes"]} == {GOOGLE_USER, microsoft.address}
    assert issued.key_id in {key["id"] for key in export["api_keys"]}
    assert {job["id"] for job in export["jobs"]} == {job.id for job in jobs}
    exported_job = next(job for job in export["jobs"] if job["reference"] == "INV-0042")
    assert exported_job["content"]["subject"] == "s"
    assert exported_job["events"][0]["code"] == "enqueued"
    assert {"mailbox.connected"} <= {event["kind"] for event in export["outbox_events"]}
    # The ids the account saw in its callbacks and job histories, not internal row numbers.
    assert all(event["id"].startswith("evt_") for event in export["outbox_events"])
    assert exported_job["events"][0]["id"].startswith("jev_")
    assert "mailbox.connected" in {event["action"] for event in export["audit_events"]}
    assert other.id not in dumped and other_mailbox.id not in dumped

    report = await app.account_rights.erase(account_id, "test")

    assert report.mailboxes_disconnected == 2
    assert report.revocations_pending == 0
    ids = {account_id, google.id, microsoft.id, issued.key_id, *(job.id for job in jobs)}
    remaining = await rows_mentioning(world, ids | {GOOGLE_USER})
    assert [(table, row["action"]) for table, row in remaining] == [
        ("audit_events", "account.erased")
    ]
    record = remaining[0][1]
    assert GOOGLE_USER not in json.dumps(record["detail"])
    assert record["detail"]["deleted"]["jobs"] == 2
    revoked = {str(grant["user"]): grant["revoked"] for grant in await grants(world)}
    assert revoked == {GOOGLE_USER: True, "billing@fabrikam.example": False}
    assert await world.token_records() == 1  # the other account's mailbox
    # The other account is untouched.
    assert await app.accounts.get_account(other.id) is not None
    assert (await app.mailboxes.get(other_mailbox.id)) is not None
    assert (await app.jobs.get(other_job.id)) is not None


async def test_erasing_revokes_every_google_grant_of_the_account(world: World) -> None:
    google = await world.connected("google", login=GOOGLE_USER)
    [grant] = await grants(world)
    assert grant["revoked"] is False

    await world.app.account_rights.erase(world.principal.account_id, "test")

    [grant] = await grants(world)
    assert grant["revoked"] is True
    assert await world.app.mailboxes.get(google.id) is None


async def test_a_paused_account_waits_while_another_flows(world: World) -> None:
    app = world.app
    paused_account = world.principal.account_id
    mailbox = await world.connected("microsoft")
    other = await app.accounts.create_account("another")
    other_world = dataclasses.replace(
        world, principal=Principal(other.id, "other-key", frozenset({"mailboxes:write"}))
    )
    other_mailbox = await other_world.connected("google", login=GOOGLE_USER)

    view = await app.account_rights.pause(paused_account, "test")
    assert view.paused and view.paused_at is not None
    waiting = await world.enqueue(mailbox.id)  # still accepted
    flowing = await other_world.enqueue(other_mailbox.id, **{"from": {"address": GOOGLE_USER}})
    assert waiting.state == "queued"

    claimed = await app.queue.claim("worker-1", 10, LEASE)
    assert [job.job.id for job in claimed] == [flowing.id]
    assert await app.queue.claim("worker-1", 10, LEASE) == []

    view = await app.account_rights.resume(paused_account, "test")
    assert not view.paused and view.paused_at is None
    claimed = await app.queue.claim("worker-1", 10, LEASE)
    assert [job.job.id for job in claimed] == [waiting.id]
    actions = [event.action for event in await app.accounts.audit_events(paused_account)]
    assert actions[-2:] == ["account.paused", "account.resumed"]


async def test_pausing_twice_keeps_the_first_time_and_audits_once(world: World) -> None:
    account_id = world.principal.account_id
    first = await world.app.account_rights.pause(account_id, "test")
    again = await world.app.account_rights.pause(account_id, "test")
    assert again.paused_at == first.paused_at
    actions = [event.action for event in await world.app.accounts.audit_events(account_id)]
    assert actions.count("account.paused") == 1
