"""Connecting a Microsoft mailbox through the sandbox with the real msal, on both databases.

The admin's browser is played with aiohttp on the sandbox's consent page; the daemon side is
the real MailboxService, vault and AccessTokens (no HTTP server needed: the callback's query
is handed to ``complete`` as the API would).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from sqlalchemy import update

from mailbox_worker.accounts import Principal
from mailbox_worker.clock import utcnow
from mailbox_worker.db.models import Base, OAuthState
from mailbox_worker.errors import Conflict, IdentityMisconfigured, ReauthRequired
from mailbox_worker.jobs.intake import Submission

from .oauth_world import ADDRESS, World

OTHER = "accounts@contoso.example"


def requested_scopes(authorization_url: str) -> set[str]:
    return set(parse_qs(urlsplit(authorization_url).query)["scope"][0].split())


@pytest.mark.parametrize(
    ("capabilities", "api_scopes"),
    [
        (["send"], {"https://graph.microsoft.com/Mail.Send"}),
        (
            ["send", "draft"],
            {"https://graph.microsoft.com/Mail.Send", "https://graph.microsoft.com/Mail.ReadWrite"},
        ),
    ],
)
async def test_connect_asks_exactly_the_minimal_scopes(
    world: World, capabilities: list[str], api_scopes: set[str]
) -> None:
    start = await world.app.mailbox_service.create(
        world.principal, "microsoft", capabilities, None, ADDRESS
    )
    assert requested_scopes(start.authorization_url) == api_scopes | {
        "openid",
        "profile",
        "offline_access",
        "email",
    }
    result = await world.app.mailbox_service.complete(await world.consent(start.authorization_url))
    assert result.outcome == "connected", result.message
    mailbox = await world.app.mailboxes.get(start.mailbox.id)
    assert mailbox is not None
    assert (mailbox.state, mailbox.address) == ("connected", ADDRESS)
    assert await world.token_records() == 1
    actions = [
        event.action for event in await world.app.accounts.audit_events(world.principal.account_id)
    ]
    assert "mailbox.connected" in actions


async def test_denied_consent_stores_nothing(world: World) -> None:
    await world.app.accounts.set_return_origins(
        world.principal.account_id, ["https://app.example"], "test"
    )
    start = await world.app.mailbox_service.create(
        world.principal, "microsoft", ["send"], "https://app.example/done", ADDRESS
    )
    result = await world.app.mailbox_service.complete(
        await world.consent(start.authorization_url, action="cancel")
    )
    assert result.outcome == "access_denied"
    assert result.redirect_url is not None
    assert "outcome=access_denied" in result.redirect_url
    mailbox = await world.app.mailboxes.get(start.mailbox.id)
    assert mailbox is not None
    assert (mailbox.state, mailbox.state_reason) == ("pending_consent", "access_denied")
    assert await world.token_records() == 0


async def test_a_grant_missing_a_scope_is_refused(world: World) -> None:
    start = await world.app.mailbox_service.create(
        world.principal, "microsoft", ["send", "draft"], None, ADDRESS
    )
    query = await world.consent(start.authorization_url, untick="Mail.ReadWrite")
    result = await world.app.mailbox_service.complete(query)
    assert result.outcome == "scope_missing"
    assert "Mail.ReadWrite" in result.message
    mailbox = await world.app.mailboxes.get(start.mailbox.id)
    assert mailbox is not None
    assert (mailbox.state, mailbox.state_reason) == ("pending_consent", "scope_missing")
    assert await world.token_records() == 0


async def test_state_is_single_use_and_expires(world: World) -> None:
    start = await world.app.mailbox_service.create(
        world.principal, "microsoft", ["send"], None, ADDRESS
    )
    query = await world.consent(start.authorization_url)
    assert (await world.app.mailbox_service.complete(query)).outcome == "connected"
    replay = await world.app.mailbox_service.complete(query)
    assert replay.outcome == "state_invalid"
    assert (await world.app.mailbox_service.complete({"code": "x"})).outcome == "state_invalid"

    again = await world.app.mailbox_service.reconnect(world.principal, start.mailbox.id, None)
    async with world.app.sessions.begin() as session:
        await session.execute(update(OAuthState).values(expires_at=utcnow()))
    late = await world.app.mailbox_service.complete(await world.consent(again.authorization_url))
    assert late.outcome == "state_expired"


async def test_reconnecting_as_another_mailbox_is_refused(world: World) -> None:
    start = await world.app.mailbox_service.create(
        world.principal, "microsoft", ["send"], None, ADDRESS
    )
    await world.app.mailbox_service.complete(await world.consent(start.authorization_url))
    again = await world.app.mailbox_service.reconnect(world.principal, start.mailbox.id, None)
    result = await world.app.mailbox_service.complete(
        await world.consent(again.authorization_url, login=OTHER)
    )
    assert result.outcome == "address_mismatch"
    mailbox = await world.app.mailboxes.get(start.mailbox.id)
    assert mailbox is not None
    assert mailbox.address == ADDRESS


async def expire_cached_access_token(world: World, mailbox_id: str) -> None:
    """Make the stored msal cache say its access token expired (as time passing would)."""
    stored = await world.app.vault.load_tokens(mailbox_id)
    assert stored is not None
    cache: dict[str, Any] = json.loads(stored.plaintext)
    for entry in cache.get("AccessToken", {}).values():
        entry["expires_on"] = entry["extended_expires_on"] = "1"
    await world.app.vault.store_tokens(
        mailbox_id, json.dumps(cache).encode(), expected_version=stored.version
    )
    world.app.tokens.forget(mailbox_id)


async def test_fifty_concurrent_requests_for_an_expired_token_refresh_once(world: World) -> None:
    mailbox = await world.connected()
    before = (await world.counters()).get("identity.token.refresh_token", 0)
    first = await world.app.tokens.get(mailbox)
    assert (await world.counters()).get("identity.token.refresh_token", 0) == before  # still valid

    stored_before = await world.app.vault.load_tokens(mailbox.id)
    await expire_cached_access_token(world, mailbox.id)
    tokens = await asyncio.gather(*(world.app.tokens.get(mailbox) for _ in range(50)))
    assert len(set(tokens)) == 1
    assert tokens[0] != first
    assert (await world.counters())["identity.token.refresh_token"] == before + 1
    stored_after = await world.app.vault.load_tokens(mailbox.id)
    assert stored_before is not None
    assert stored_after is not None
    assert stored_after.version == stored_before.version + 2  # our expiry edit, then the rotation
    old_rt = {e["secret"] for e in json.loads(stored_before.plaintext)["RefreshToken"].values()}
    new_rt = {e["secret"] for e in json.loads(stored_after.plaintext)["RefreshToken"].values()}
    assert old_rt.isdisjoint(new_rt), "the rotated refresh token was not persisted"


async def test_a_revoked_grant_raises_reauth_required(world: World) -> None:
    mailbox = await world.connected()
    async with aiohttp.ClientSession() as http:
        url = f"{world.sandbox.base_url}/_sandbox/users/{ADDRESS}/scenario"
        async with http.post(url, json={"scenario": "revoke_sessions"}, ssl=world.ssl) as answer:
            assert answer.status < 300
    await expire_cached_access_token(world, mailbox.id)
    with pytest.raises(ReauthRequired) as caught:
        await world.app.tokens.get(mailbox)
    assert caught.value.code == "invalid_grant"


async def test_disconnect_erases_every_token_byte(world: World) -> None:
    service = world.app.mailbox_service
    start = await service.create(world.principal, "microsoft", ["send"], None, ADDRESS)
    await service.complete(await world.consent(start.authorization_url))
    stored = await world.app.vault.load_tokens(start.mailbox.id)
    assert stored is not None
    secrets = [
        entry["secret"]
        for kind in ("AccessToken", "RefreshToken", "IdToken")
        for entry in json.loads(stored.plaintext).get(kind, {}).values()
    ]
    assert secrets
    jobs_principal = Principal(world.principal.account_id, "k", frozenset({"jobs:write"}))
    body = {
        "mailbox_id": start.mailbox.id,
        "mode": "send",
        "message": {"to": [{"address": "ap@fabrikam.example"}], "subject": "s", "text": "t"},
    }
    pending, _ = await world.app.intake.submit(jobs_principal, Submission(body, None))

    await service.disconnect(world.principal, start.mailbox.id)
    await service.disconnect(world.principal, start.mailbox.id)  # idempotent

    assert await world.token_records() == 0
    assert await world.app.vault.key_usage() == {}
    mailbox = await world.app.mailboxes.get(start.mailbox.id)
    assert mailbox is not None
    assert mailbox.state == "disconnected"
    cancelled = await world.app.jobs.get(pending.id)
    assert cancelled is not None
    assert (cancelled.state, cancelled.last_error_code) == ("cancelled", "mailbox_disconnected")
    with pytest.raises(Conflict) as refused:
        await world.app.intake.submit(jobs_principal, Submission(body, None))
    assert refused.value.code == "mailbox_disconnected"
    # No byte of any token anywhere: every row of every table, and the database files.
    dump = b""
    async with world.app.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            for row in (await connection.execute(table.select())).all():
                dump += repr(tuple(row)).encode()
    database = world.app.engine.url.database
    if world.app.engine.dialect.name == "sqlite" and database:
        for path in Path(database).parent.glob(Path(database).name + "*"):
            dump += path.read_bytes()
    for secret in secrets:
        assert secret.encode() not in dump


@pytest.mark.parametrize(("kind", "status"), [("status", 503), ("status", 429), ("reset", 500)])
async def test_transient_token_endpoint_failures_are_retried_and_break_nothing(
    world: World, kind: str, status: int
) -> None:
    mailbox = await world.connected()
    await expire_cached_access_token(world, mailbox.id)
    world.sandbox.state.queue_fault(
        "identity.token.refresh_token", kind, status=status, retry_after=1
    )
    token = await world.app.tokens.get(mailbox)
    assert token
    assert not world.sandbox.state.faults  # the fault was really hit
    still = await world.app.mailboxes.get(mailbox.id)
    assert still is not None
    assert still.state == "connected"


async def test_reconnecting_releases_the_held_jobs(world: World) -> None:
    service = world.app.mailbox_service
    start = await service.create(world.principal, "microsoft", ["send"], None, ADDRESS)
    await service.complete(await world.consent(start.authorization_url))
    jobs_principal = Principal(world.principal.account_id, "k", frozenset({"jobs:write"}))
    body = {
        "mailbox_id": start.mailbox.id,
        "mode": "send",
        "message": {"to": [{"address": "ap@fabrikam.example"}], "subject": "s", "text": "t"},
    }
    job, _ = await world.app.intake.submit(jobs_principal, Submission(body, None))
    # what the worker does when the grant dies (see test_worker.py)
    await world.app.mailboxes.set_state(
        start.mailbox.id, "reauth_required", "invalid_grant", expected=["connected"]
    )
    assert (
        await world.app.queue.hold_for_mailbox(
            start.mailbox.id, "invalid_grant", "the grant was revoked"
        )
        == 1
    )
    later, _ = await world.app.intake.submit(jobs_principal, Submission(body, "while-broken"))
    assert later.state == "held"

    again = await service.reconnect(world.principal, start.mailbox.id, None)
    wakeup = world.app.worker._wakeup  # no worker runs here: a wake-up stays set until taken
    wakeup.clear()
    assert (await service.complete(await world.consent(again.authorization_url))).outcome == (
        "connected"
    )
    for job_id in (job.id, later.id):
        released = await world.app.jobs.get(job_id)
        assert released is not None
        assert released.state == "queued"
    # This process's worker hears of the released jobs at once (other processes by NOTIFY,
    # test_wakeups.py): it may have taken every due job before and be waiting for a wake-up.
    assert wakeup.is_set()


async def test_an_access_token_refused_before_its_expiry_is_replaced(world: World) -> None:
    """Graph may refuse a token msal still deems valid (revoked early): the job must not
    keep retrying that token; the worker redeems the refresh token once and sends."""
    mailbox = await world.connected()
    refused = await world.app.tokens.get(mailbox)
    world.sandbox.state.access_tokens.pop(refused)  # Graph now answers 401 for it
    refreshes = (await world.counters()).get("identity.token.refresh_token", 0)
    job = await world.enqueue(mailbox.id)
    await asyncio.wait_for(world.app.worker.run_until_idle(), 60)
    done = await world.app.jobs.get(job.id)
    assert done is not None
    assert (done.state, done.attempts) == ("sent", 2)
    assert (await world.counters()).get("identity.token.refresh_token", 0) == refreshes + 1
    assert await world.app.tokens.get(mailbox) != refused


async def test_many_jobs_refused_the_same_token_cause_one_refresh(world: World) -> None:
    mailbox = await world.connected()
    refused = await world.app.tokens.get(mailbox)
    refreshes = (await world.counters()).get("identity.token.refresh_token", 0)

    async def job_refused() -> str:
        world.app.tokens.reject(mailbox.id, refused)
        return await world.app.tokens.get(mailbox)

    tokens = await asyncio.gather(*(job_refused() for _ in range(20)))
    assert len(set(tokens)) == 1 and refused not in tokens
    assert (await world.counters()).get("identity.token.refresh_token", 0) == refreshes + 1


async def test_a_refused_app_secret_is_an_operator_problem_not_a_dead_grant(world: World) -> None:
    mailbox = await world.connected()
    client = world.sandbox.state.clients["sandbox-client"]
    # The secret expired in Entra (AADSTS7000222): every refresh now answers invalid_client.
    world.sandbox.state.register_client(
        client.client_id, "a-newer-secret", client.redirect_uris, client.name
    )
    refreshes = (await world.counters()).get("identity.token.refresh_token", 0)
    with pytest.raises(IdentityMisconfigured) as raised:
        await world.app.tokens.get(mailbox, force_refresh=True)
    assert (raised.value.code, raised.value.retry_after) == ("identity_misconfigured", 300.0)
    assert (await world.counters()).get("identity.token.refresh_token", 0) == refreshes + 1
    still = await world.app.mailboxes.get(mailbox.id)
    assert still is not None and still.state == "connected"


async def test_the_pinned_address_is_the_mail_address_not_the_sign_in_name(world: World) -> None:
    sign_in_name = "j.smith@contoso.onmicrosoft.com"
    world.sandbox.state.set_sign_in_name(ADDRESS, sign_in_name)
    service = world.app.mailbox_service
    start = await service.create(world.principal, "microsoft", ["send"], None, sign_in_name)
    result = await service.complete(
        await world.consent(start.authorization_url, login=sign_in_name)
    )
    assert result.outcome == "connected", result.message
    mailbox = await world.app.mailboxes.get(start.mailbox.id)
    assert mailbox is not None and mailbox.address == ADDRESS
    jobs_principal = Principal(world.principal.account_id, "k", frozenset({"jobs:write"}))
    body = {
        "mailbox_id": mailbox.id,
        "mode": "send",
        "from": {"address": ADDRESS},
        "message": {"to": [{"address": "ap@fabrikam.example"}], "subject": "s", "text": "t"},
    }
    job, _ = await world.app.intake.submit(jobs_principal, Submission(body, None))
    await asyncio.wait_for(world.app.worker.run_until_idle(), 60)
    sent = await world.app.jobs.get(job.id)
    assert sent is not None and sent.state == "sent", sent and sent.last_error_code
    [message] = world.sandbox.state.messages()
    assert message.sender == ADDRESS


@pytest.mark.parametrize(("kind", "status"), [("status", 503), ("status", 500), ("reset", 500)])
async def test_an_unavailable_token_endpoint_during_connect_says_so(
    world: World, kind: str, status: int
) -> None:
    service = world.app.mailbox_service
    start = await service.create(world.principal, "microsoft", ["send"], None, ADDRESS)
    query = await world.consent(start.authorization_url)
    world.sandbox.state.queue_fault("identity.token.authorization_code", kind, status=status)
    result = await service.complete(query)
    assert result.outcome == "provider_unavailable", result.message
    assert not world.sandbox.state.faults  # the fault was really hit
    assert await world.token_records() == 0


async def test_the_invoicing_app_hears_of_connect_and_disconnect_once(world: World) -> None:
    service = world.app.mailbox_service
    start = await service.create(world.principal, "microsoft", ["send"], None, ADDRESS)
    await service.complete(await world.consent(start.authorization_url))
    await service.disconnect(world.principal, start.mailbox.id)
    await service.disconnect(world.principal, start.mailbox.id)  # idempotent: no second event
    events = [(event.kind, event.payload) for event in await world.app.outbox.all()]
    assert events == [
        ("mailbox.connected", {"mailbox_id": start.mailbox.id, "provider": "microsoft"}),
        (
            "mailbox.disconnected",
            {"mailbox_id": start.mailbox.id, "provider": "microsoft", "cancelled_jobs": 0},
        ),
    ]


async def test_a_disconnect_during_code_redemption_wins(world: World) -> None:
    service = world.app.mailbox_service
    start = await service.create(world.principal, "microsoft", ["send"], None, ADDRESS)
    query = await world.consent(start.authorization_url)
    # The token endpoint holds the redemption long enough for the admin to disconnect.
    world.sandbox.state.queue_fault("identity.token.authorization_code", "delay", delay=1.0)
    completing = asyncio.create_task(service.complete(query))
    async with asyncio.timeout(20):  # a hang guard, not a performance assertion
        while not (await world.counters()).get("identity.token.authorization_code"):
            await asyncio.sleep(0.01)
    await service.disconnect(world.principal, start.mailbox.id)
    result = await completing
    assert result.outcome == "mailbox_disconnected"
    mailbox = await world.app.mailboxes.get(start.mailbox.id)
    assert mailbox is not None and mailbox.state == "disconnected"
    assert await world.token_records() == 0
    kinds = [event.kind for event in await world.app.outbox.all()]
    assert kinds == ["mailbox.disconnected"]
