"""A tenant that lets only an administrator consent, and a deployment offering Gmail send-only.

Microsoft: through the sandbox with the real msal. A user of a tenant that blocks user consent
signs in; Entra answers the redirect with AADSTS90094 (docs/providers.md A8); the callback says
an administrator must approve the app and hands out the v2.0 admin-consent link for exactly
the mailbox's scopes. Once the administrator consented, the same user connects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from mailbox_worker.errors import Conflict
from mailbox_worker.sandbox.microsoft import scopes as sandbox_scopes

from .oauth_world import ADDRESS, World, running_world

SEND = "https://graph.microsoft.com/Mail.Send"


async def test_a_tenant_blocking_user_consent_gets_the_admin_consent_link(world: World) -> None:
    world.sandbox.state.apply_scenario(ADDRESS, "user_consent_blocked")
    await world.app.accounts.set_return_origins(
        world.principal.account_id, ["https://app.example"], "test"
    )
    service = world.app.mailbox_service
    start = await service.create(
        world.principal, "microsoft", ["send"], "https://app.example/done", ADDRESS
    )
    query = await world.consent(start.authorization_url)
    assert query["error_description"].startswith("AADSTS90094:")
    result = await service.complete(query)

    assert result.outcome == "admin_consent_required"
    assert "administrator" in result.message
    assert "AADSTS" not in result.message
    assert result.admin_consent_url is not None
    link = urlsplit(result.admin_consent_url)
    authority = urlsplit(world.app.settings.microsoft.authority)
    assert (link.netloc, link.path) == (authority.netloc, authority.path + "/v2.0/adminconsent")
    assert parse_qs(link.query) == {
        "client_id": [world.app.settings.microsoft.client_id],
        "scope": [f"openid profile offline_access email {SEND}"],
        "redirect_uri": [f"{world.app.settings.server.public_url}/oauth/callback"],
    }
    assert result.redirect_url is not None
    back = parse_qs(urlsplit(result.redirect_url).query)
    assert back["outcome"] == ["admin_consent_required"]
    assert back["admin_consent_url"] == [result.admin_consent_url]
    mailbox = await world.app.mailboxes.get(start.mailbox.id)
    assert mailbox is not None
    assert (mailbox.state, mailbox.state_reason) == ("pending_consent", "admin_consent_required")
    assert await world.token_records() == 0

    # The administrator approves (the admin-consent endpoint is not simulated) and comes back.
    user = world.sandbox.state.find_user(ADDRESS)
    assert user is not None
    world.sandbox.state.grant_admin_consent(
        user.tenant_id,
        world.app.settings.microsoft.client_id,
        set(sandbox_scopes.canonical_set(parse_qs(link.query)["scope"][0].split())),
    )
    answered = await service.complete({"admin_consent": "True", "tenant": user.tenant_id})
    assert (answered.outcome, answered.mailbox_id, answered.redirect_url) == (
        "admin_consent_answered",
        None,
        None,
    )
    again = await service.reconnect(world.principal, start.mailbox.id, None)
    result = await service.complete(await world.consent(again.authorization_url))
    assert result.outcome == "connected", result.message


async def test_a_declined_consent_is_still_access_denied_in_a_blocking_tenant(
    world: World,
) -> None:
    world.sandbox.state.apply_scenario(ADDRESS, "user_consent_blocked")
    start = await world.app.mailbox_service.create(
        world.principal, "microsoft", ["send"], None, ADDRESS
    )
    query = await world.consent(start.authorization_url, action="cancel")
    result = await world.app.mailbox_service.complete(query)
    assert (result.outcome, result.admin_consent_url) == ("access_denied", None)


@pytest.fixture
async def send_only_world(migrated_database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with running_world(migrated_database_url, tmp_path, google_drafts=False) as running:
        yield running


async def test_gmail_send_only_refuses_draft_mailboxes_and_never_asks_compose(
    send_only_world: World,
) -> None:
    world = send_only_world
    service = world.app.mailbox_service
    with pytest.raises(Conflict) as refused:
        await service.create(world.principal, "google", ["send", "draft"], None, None)
    assert refused.value.code == "capability_not_offered"
    assert "gmail.compose" in refused.value.message
    assert await world.app.mailboxes.list(world.principal.account_id) == []
    start = await service.create(world.principal, "google", ["send"], None, None)
    scopes = parse_qs(urlsplit(start.authorization_url).query)["scope"][0].split()
    assert not [scope for scope in scopes if scope.endswith("gmail.compose")]
    # Microsoft drafts are not affected by the Google setting.
    await service.create(world.principal, "microsoft", ["send", "draft"], None, ADDRESS)
