"""Connecting a Google mailbox through the sandbox with google-auth-oauthlib and google-auth.

Granular consent can drop a scope: the mailbox then stays unconnected (scope_missing) and the
partial grant is revoked at Google. Disconnect revokes the grant; when Google is unreachable
the revocation waits in the background queue and completes later.
"""

from __future__ import annotations

import dataclasses
import json
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from mailbox_worker.errors import Conflict, IdentityMisconfigured, PolicyViolation, ReauthRequired
from mailbox_worker.jobs.intake import JobIntake, Submission
from mailbox_worker.providers.google_gate import GoogleOperationGate
from mailbox_worker.tokens.google import GoogleIdentity
from mailbox_worker.tokens.identity_client import Grant

from .oauth_world import World

GOOGLE_USER = "invoices@fabrikam.example"
SEND = "https://www.googleapis.com/auth/gmail.send"
COMPOSE = "https://www.googleapis.com/auth/gmail.compose"


async def grants(world: World) -> list[dict[str, object]]:
    async with aiohttp.ClientSession() as http:
        url = f"{world.sandbox.base_url}/_sandbox/google/grants"
        async with http.get(url, ssl=world.ssl) as answer:
            return list((await answer.json())["grants"])


def requested(url: str) -> set[str]:
    return set(parse_qs(urlsplit(url).query)["scope"][0].split())


@pytest.mark.parametrize(
    ("capabilities", "api_scopes"), [(["send"], {SEND}), (["send", "draft"], {SEND, COMPOSE})]
)
async def test_connect_google_with_minimal_scopes(
    world: World, capabilities: list[str], api_scopes: set[str]
) -> None:
    service = world.app.mailbox_service
    start = await service.create(world.principal, "google", capabilities, None, GOOGLE_USER)
    assert requested(start.authorization_url) == api_scopes | {"openid", "email"}
    query = await world.consent(start.authorization_url, login=GOOGLE_USER)
    result = await service.complete(query)
    assert result.outcome == "connected", result.message
    mailbox = await world.app.mailboxes.get(start.mailbox.id)
    assert mailbox is not None
    assert (mailbox.state, mailbox.address) == ("connected", GOOGLE_USER)
    assert api_scopes <= set(mailbox.granted_scopes)
    assert "https://mail.google.com/" not in mailbox.granted_scopes
    stored = await world.app.vault.load_tokens(mailbox.id)
    assert stored is not None
    assert "client_secret" not in json.loads(stored.plaintext)
    assert await world.app.tokens.get(mailbox)


async def test_a_partial_google_grant_is_refused_and_revoked(world: World) -> None:
    service = world.app.mailbox_service
    start = await service.create(world.principal, "google", ["send", "draft"], None, GOOGLE_USER)
    query = await world.consent(start.authorization_url, login=GOOGLE_USER, untick="gmail.compose")
    result = await service.complete(query)
    assert result.outcome == "scope_missing"
    mailbox = await world.app.mailboxes.get(start.mailbox.id)
    assert mailbox is not None
    assert (mailbox.state, mailbox.state_reason) == ("pending_consent", "scope_missing")
    assert await world.token_records() == 0
    [grant] = await grants(world)
    assert grant["revoked"] is True


async def test_disconnect_revokes_at_google_even_after_an_outage(world: World) -> None:
    service = world.app.mailbox_service
    start = await service.create(world.principal, "google", ["send"], None, GOOGLE_USER)
    await service.complete(await world.consent(start.authorization_url, login=GOOGLE_USER))
    world.sandbox.state.queue_fault("google.revoke", "status", status=503)
    mailbox = await service.disconnect(world.principal, start.mailbox.id)
    assert mailbox.state == "disconnected"
    assert await world.token_records() == 0
    [grant] = await grants(world)
    assert grant["revoked"] is False  # Google was down: the revocation waits
    assert len(await world.app.revocations.pending()) == 1
    assert await world.app.revocations.retry_due(everything=True) == 1
    [grant] = await grants(world)
    assert grant["revoked"] is True
    assert await world.app.revocations.pending() == []


async def test_jobs_for_google_mailboxes_are_accepted_and_refused_without_a_transport(
    world: World,
) -> None:
    service = world.app.mailbox_service
    start = await service.create(world.principal, "google", ["send"], None, GOOGLE_USER)
    await service.complete(await world.consent(start.authorization_url, login=GOOGLE_USER))
    body = {
        "mailbox_id": start.mailbox.id,
        "mode": "send",
        "message": {"to": [{"address": "ap@fabrikam.example"}], "subject": "s", "text": "t"},
    }
    job, created = await world.app.intake.submit(world.principal, Submission(body, None))
    assert (job.state, created) == ("queued", True)
    # A provider without a transport is still refused at intake.
    without_transport = JobIntake(
        world.app.jobs,
        lambda provider, mode, capabilities: None,
        world.app.telemetry,
    )
    with pytest.raises(Conflict) as caught:
        await without_transport.submit(world.principal, Submission(body, None))
    assert caught.value.code == "provider_not_supported"


@pytest.mark.parametrize("scenario", ["revoked", "password_changed", "testing_expired"])
async def test_a_dead_google_grant_raises_reauth_required(world: World, scenario: str) -> None:
    mailbox = await world.connected("google", login=GOOGLE_USER)
    assert await world.app.tokens.get(mailbox)
    world.sandbox.state.google.apply_scenario(GOOGLE_USER, scenario)
    with pytest.raises(ReauthRequired) as raised:
        await world.app.tokens.get(mailbox, force_refresh=True)
    assert raised.value.code == "invalid_grant"


async def test_a_refused_google_client_is_an_operator_problem(world: World) -> None:
    mailbox = await world.connected("google", login=GOOGLE_USER)
    client = world.sandbox.state.google.clients["sandbox-google-client"]
    world.sandbox.state.google.register_client(
        client.client_id, "a-newer-secret", client.redirect_uris, client.name
    )
    with pytest.raises(IdentityMisconfigured) as raised:
        await world.app.tokens.get(mailbox, force_refresh=True)
    assert raised.value.code == "identity_misconfigured"
    still = await world.app.mailboxes.get(mailbox.id)
    assert still is not None and still.state == "connected"


@pytest.mark.parametrize("status", [503, 500])
async def test_an_unavailable_google_token_endpoint_during_connect_says_so(
    world: World, status: int
) -> None:
    service = world.app.mailbox_service
    start = await service.create(world.principal, "google", ["send"], None, GOOGLE_USER)
    query = await world.consent(start.authorization_url, login=GOOGLE_USER)
    world.sandbox.state.queue_fault("google.token.authorization_code", "status", status=status)
    result = await service.complete(query)
    assert result.outcome == "provider_unavailable", result.message
    assert not world.sandbox.state.faults
    assert await world.token_records() == 0


async def test_a_grant_carrying_a_read_scope_is_refused_and_revoked(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Google's incremental authorization can return scopes granted earlier (docs/providers.md
    # C2): here a gmail.readonly the sandbox would not grant by itself.
    identity = world.app.identities["google"]
    redeem = identity.redeem

    def with_an_old_read_scope(flow: dict[str, object], query: dict[str, str]) -> Grant:
        grant = redeem(flow, query)
        readonly = "https://www.googleapis.com/auth/gmail.readonly"
        return dataclasses.replace(grant, granted_scopes=(*grant.granted_scopes, readonly))

    monkeypatch.setattr(identity, "redeem", with_an_old_read_scope)
    service = world.app.mailbox_service
    start = await service.create(world.principal, "google", ["send"], None, GOOGLE_USER)
    result = await service.complete(await world.consent(start.authorization_url, login=GOOGLE_USER))
    assert result.outcome == "scope_too_broad"
    assert "gmail.readonly" in result.message
    mailbox = await world.app.mailboxes.get(start.mailbox.id)
    assert mailbox is not None and mailbox.state == "pending_consent"
    assert await world.token_records() == 0
    [grant] = await grants(world)
    assert grant["revoked"] is True


async def test_google_auth_talks_only_through_the_operation_gate(world: World) -> None:
    mailbox = await world.connected("google", login=GOOGLE_USER)
    stored = await world.app.vault.load_tokens(mailbox.id)
    assert stored is not None
    settings = world.app.settings.google
    # A gate whose token endpoint is elsewhere: the configured one is then off the list.
    elsewhere = dataclasses.replace(settings.endpoints(), token="https://elsewhere.example/t")
    identity = GoogleIdentity(settings, GoogleOperationGate(elsewhere))
    before = world.sandbox.state.counters()
    try:
        with pytest.raises(PolicyViolation):
            identity.refresh(stored.plaintext.decode(), [SEND], force=True)
        flow = identity.start([SEND], "http://127.0.0.1:8080/oauth/callback", None)
        with pytest.raises(PolicyViolation):
            identity.redeem(flow, {"state": flow["state"], "code": "a-code"})
    finally:
        identity.close()
    assert world.sandbox.state.counters() == before
