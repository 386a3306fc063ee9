"""A mailbox is pinned to the account that connected it, and its address must be a real one.

Entra's ``email`` claim is an attribute a tenant admin may set (nOAuth): a user deleted and
re-created, or another tenant's user, can carry the same address under another ``tid``/``oid``.
Google's ``sub`` likewise outlives any address. Reconnecting as another account is refused
(``identity_mismatch``) and keeps nothing of the fresh grant; a mailbox connected before
pinning existed is pinned at its next reconnect, which still checks the address
(docs/identity.md). Real msal and google-auth against the sandbox, on both databases.
"""

from __future__ import annotations

from sqlalchemy import update

from mailbox_worker.db.models import Mailbox, TokenRecord

from .oauth_world import ADDRESS, World

OTHER = "accounts@contoso.example"
GOOGLE_USER = "invoices@fabrikam.example"
RETURN_URL = "https://app.example/done"


async def pinned(world: World, mailbox_id: str) -> tuple[str | None, str | None]:
    mailbox = await world.app.mailboxes.get(mailbox_id)
    assert mailbox is not None
    return mailbox.identity_tenant, mailbox.identity_subject


async def stored_token_row(world: World, mailbox_id: str) -> tuple[int, bytes] | None:
    async with world.app.sessions() as session:
        row = await session.get(TokenRecord, mailbox_id)
        return None if row is None else (row.version, row.ciphertext)


async def lose_the_grant(world: World, mailbox_id: str) -> None:
    """What the worker does when the grant dies: the admin must now reconnect."""
    moved = await world.app.mailboxes.set_state(
        mailbox_id, "reauth_required", "invalid_grant", expected=["connected"]
    )
    assert moved


async def declare_return_origin(world: World) -> None:
    """The account declares RETURN_URL's origin, as its admin would."""
    await world.app.accounts.set_return_origins(
        world.principal.account_id, ["https://app.example"], "test"
    )


async def reconnect(world: World, mailbox_id: str, login: str) -> str:
    """Reconnect ``mailbox_id`` signing in as ``login``; the outcome on the return URL."""
    service = world.app.mailbox_service
    await declare_return_origin(world)
    again = await service.reconnect(world.principal, mailbox_id, RETURN_URL)
    result = await service.complete(await world.consent(again.authorization_url, login=login))
    assert result.redirect_url is not None
    assert f"outcome={result.outcome}" in result.redirect_url
    return result.outcome


async def assert_refused_and_nothing_kept(
    world: World, mailbox_id: str, outcome: str, before: tuple[int, bytes] | None
) -> None:
    mailbox = await world.app.mailboxes.get(mailbox_id)
    assert mailbox is not None
    assert (mailbox.state, mailbox.state_reason) == ("reauth_required", outcome)
    assert mailbox.address == ADDRESS or mailbox.provider == "google"
    assert await stored_token_row(world, mailbox_id) == before  # the fresh grant never stored
    events = await world.app.accounts.audit_events(world.principal.account_id)
    assert ("mailbox.consent_failed", {"code": outcome}) in [(e.action, e.detail) for e in events]


# -- Microsoft ------------------------------------------------------------------------------------


async def test_connecting_pins_the_entra_tenant_and_object_id(world: World) -> None:
    user = world.sandbox.state.users[ADDRESS]
    mailbox = await world.connected()
    assert await pinned(world, mailbox.id) == (user.tenant_id, user.object_id)

    await lose_the_grant(world, mailbox.id)
    assert await reconnect(world, mailbox.id, ADDRESS) == "connected"
    assert await pinned(world, mailbox.id) == (user.tenant_id, user.object_id)


async def test_another_entra_user_with_the_same_address_cannot_reconnect(world: World) -> None:
    mailbox = await world.connected()
    first = await pinned(world, mailbox.id)
    await lose_the_grant(world, mailbox.id)
    before = await stored_token_row(world, mailbox.id)
    # The user is deleted and another created with the same address: a new object id.
    newcomer = world.sandbox.state.add_user(ADDRESS, "Someone Else")
    assert (newcomer.tenant_id, newcomer.object_id) != first

    assert await reconnect(world, mailbox.id, ADDRESS) == "identity_mismatch"

    await assert_refused_and_nothing_kept(world, mailbox.id, "identity_mismatch", before)
    assert await pinned(world, mailbox.id) == first
    fresh = [
        value
        for value, token in world.sandbox.state.refresh_tokens.items()
        if token.object_id == newcomer.object_id
    ]
    assert fresh, "the sandbox issued the newcomer a refresh token"
    stored = await world.app.vault.load_tokens(mailbox.id)
    assert stored is not None
    assert not any(value.encode() in stored.plaintext for value in fresh)


async def test_the_same_object_id_in_another_tenant_cannot_reconnect(
    multi_tenant_world: World,
) -> None:
    world = multi_tenant_world
    mailbox = await world.connected()
    tenant, object_id = await pinned(world, mailbox.id)
    await lose_the_grant(world, mailbox.id)
    before = await stored_token_row(world, mailbox.id)
    # Entra never issues one oid in two tenants; keeping it isolates the tenant check: the
    # pair is pinned, so no other directory's account passes, whatever ids it claims.
    elsewhere = world.sandbox.state.add_user(ADDRESS, tenant="northwind", object_id=object_id)
    assert elsewhere.tenant_id != tenant

    assert await reconnect(world, mailbox.id, ADDRESS) == "identity_mismatch"

    await assert_refused_and_nothing_kept(world, mailbox.id, "identity_mismatch", before)
    assert await pinned(world, mailbox.id) == (tenant, object_id)


async def test_a_mailbox_connected_before_pinning_is_pinned_at_its_next_reconnect(
    world: World,
) -> None:
    mailbox = await world.connected()
    # As migration 0004 leaves a mailbox connected before it: no pinned account.
    async with world.app.sessions.begin() as session:
        await session.execute(
            update(Mailbox)
            .where(Mailbox.id == mailbox.id)
            .values(identity_tenant=None, identity_subject=None)
        )
    await lose_the_grant(world, mailbox.id)

    # The address is still checked: another mailbox is refused, and nothing gets pinned.
    assert await reconnect(world, mailbox.id, OTHER) == "address_mismatch"
    assert await pinned(world, mailbox.id) == (None, None)

    # The same address pins whoever holds it now; from then on only that account.
    newcomer = world.sandbox.state.add_user(ADDRESS, "Whoever Holds It Now")
    assert await reconnect(world, mailbox.id, ADDRESS) == "connected"
    assert await pinned(world, mailbox.id) == (newcomer.tenant_id, newcomer.object_id)
    await lose_the_grant(world, mailbox.id)
    world.sandbox.state.add_user(ADDRESS, "Yet Another")
    assert await reconnect(world, mailbox.id, ADDRESS) == "identity_mismatch"


# -- Google ---------------------------------------------------------------------------------------


async def test_another_google_account_with_the_same_address_cannot_reconnect(
    world: World,
) -> None:
    google = world.sandbox.state.google
    first_sub = google.users[GOOGLE_USER].subject
    mailbox = await world.connected("google", login=GOOGLE_USER)
    assert await pinned(world, mailbox.id) == (None, first_sub)
    await lose_the_grant(world, mailbox.id)
    before = await stored_token_row(world, mailbox.id)
    # The account is deleted and a new one created with the same address: a new sub.
    newcomer = google.add_user(GOOGLE_USER)
    assert newcomer.subject != first_sub

    assert await reconnect(world, mailbox.id, GOOGLE_USER) == "identity_mismatch"

    await assert_refused_and_nothing_kept(world, mailbox.id, "identity_mismatch", before)
    assert await pinned(world, mailbox.id) == (None, first_sub)
    mailbox_after = await world.app.mailboxes.get(mailbox.id)
    assert mailbox_after is not None and mailbox_after.address == GOOGLE_USER
    [fresh] = [grant for grant in google.grant_list() if grant.revoked_reason != "account_deleted"]
    assert fresh.revoked, "the refused grant was revoked at Google"


async def test_the_same_google_account_reconnects(world: World) -> None:
    mailbox = await world.connected("google", login=GOOGLE_USER)
    await lose_the_grant(world, mailbox.id)
    assert await reconnect(world, mailbox.id, GOOGLE_USER) == "connected"
    assert await pinned(world, mailbox.id) == (
        None,
        world.sandbox.state.google.users[GOOGLE_USER].subject,
    )


# -- addresses ------------------------------------------------------------------------------------


async def test_an_address_with_html_or_control_characters_is_refused(world: World) -> None:
    service = world.app.mailbox_service
    await declare_return_origin(world)
    for hostile in (
        '"><img src=x onerror=alert(1)>@contoso.example',
        "bill\x1bing@contoso.example",
    ):
        world.sandbox.state.add_user(hostile)
        start = await service.create(world.principal, "microsoft", ["send"], RETURN_URL, None)
        result = await service.complete(await world.consent(start.authorization_url, login=hostile))
        assert result.outcome == "address_invalid", result.message
        assert "<" not in result.message and "\x1b" not in result.message
        mailbox = await world.app.mailboxes.get(start.mailbox.id)
        assert mailbox is not None
        assert (mailbox.state, mailbox.state_reason) == ("pending_consent", "address_invalid")
        assert (mailbox.address, mailbox.identity_subject) == (None, None)
    assert await world.token_records() == 0


async def test_an_internationalised_domain_is_kept_in_ascii_form(world: World) -> None:
    world.sandbox.state.add_user("rechnung@bücher.example")
    mailbox = await world.connected(login="rechnung@bücher.example")
    assert mailbox.address == "rechnung@xn--bcher-kva.example"
    await lose_the_grant(world, mailbox.id)
    assert await reconnect(world, mailbox.id, "rechnung@bücher.example") == "connected"
    job = await world.enqueue(
        mailbox.id,
        message={
            "from": {"address": "rechnung@bücher.example"},
            "to": [{"address": "ap@fabrikam.example"}],
            "subject": "s",
            "text": "t",
        },
    )
    assert job.state == "queued"


async def test_an_address_stored_under_idna_2003_is_spelled_anew_at_its_pinned_reconnect(
    world: World,
) -> None:
    """Until 2026-12-07 ``straße.example`` was stored as IDNA 2003 spelled it,
    ``strasse.example``: another domain's name. A pinned mailbox reconnects as the same
    account and gets today's spelling; an unpinned one, which has only its address to go by,
    is refused (docs/identity.md, "Addresses spelled before IDNA 2008")."""
    reported = "rechnung@straße.example"
    world.sandbox.state.add_user(reported, "Rechnung")
    mailbox = await world.connected(login=reported)
    assert mailbox.address == "rechnung@xn--strae-oqa.example"

    async def stored_as(address: str, *, pinned_to: tuple[str | None, str | None]) -> None:
        async with world.app.sessions.begin() as session:
            await session.execute(
                update(Mailbox)
                .where(Mailbox.id == mailbox.id)
                .values(
                    address=address,
                    identity_tenant=pinned_to[0],
                    identity_subject=pinned_to[1],
                )
            )

    account = await pinned(world, mailbox.id)
    await stored_as("rechnung@strasse.example", pinned_to=(None, None))
    await lose_the_grant(world, mailbox.id)
    assert await reconnect(world, mailbox.id, reported) == "address_mismatch"

    await stored_as("rechnung@strasse.example", pinned_to=account)
    assert await reconnect(world, mailbox.id, reported) == "connected"
    again = await world.app.mailboxes.get(mailbox.id)
    assert again is not None and again.address == "rechnung@xn--strae-oqa.example"
    assert await pinned(world, mailbox.id) == account

    # Another mailbox whose address IDNA 2003 spelled the same is still another mailbox.
    world.sandbox.state.add_user("rechnung@strasse.example", "Elsewhere")
    await stored_as("rechnung@strasse.example", pinned_to=account)
    await lose_the_grant(world, mailbox.id)
    assert await reconnect(world, mailbox.id, "rechnung@strasse.example") == "identity_mismatch"
