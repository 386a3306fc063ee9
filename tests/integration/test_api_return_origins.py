"""Return origins over HTTP: an account declares where its admins may be sent back to, and a
``return_url`` anywhere else is refused before anything is created (no open redirect)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from .api_harness import PUBLIC_URL, RunningApi, consent_code, running_api

DECLARED = "https://invoicing.example"
PATH = "/v1/account/return-origins"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[RunningApi]:
    async with running_api(tmp_path) as running:
        yield running


async def put_origins(api: RunningApi, key: str, origins: list[Any]) -> Any:
    return await api.call("PUT", PATH, key=key, json_body={"return_origins": origins})


async def create(api: RunningApi, key: str, return_url: str) -> Any:
    body = {"provider": "microsoft", "capabilities": ["send"], "return_url": return_url}
    return await api.call("POST", "/v1/mailboxes", key=key, json_body=body)


async def test_an_account_declares_origins_in_their_normalised_form(api: RunningApi) -> None:
    account_id, key = await api.account_with_key()
    before = await api.call("GET", "/v1/account", key=key)
    assert (before.status, before.json()["id"], before.json()["return_origins"]) == (
        200,
        account_id,
        [],
    )

    answer = await put_origins(
        api,
        key,
        ["HTTPS://Invoicing.Example:443/", "https://Bücher.example", "https://invoicing.example"],
    )

    assert answer.status == 200, answer.body
    stored = ["https://invoicing.example", "https://xn--bcher-kva.example"]
    assert answer.json()["return_origins"] == stored
    assert (await api.call("GET", "/v1/account", key=key)).json()["return_origins"] == stored
    audited = [e for e in await api.accounts.audit_events(account_id) if "origins" in e.action]
    assert [(e.action, e.actor, e.detail["added"]) for e in audited] == [
        ("account.return_origins_changed", f"api_key:{key.split('_')[1]}", stored)
    ]
    emptied = await put_origins(api, key, [])
    assert (emptied.status, emptied.json()["return_origins"]) == (200, [])


@pytest.mark.parametrize(
    ("origin", "reason"),
    [
        ("http://invoicing.example", "must use https"),
        ("https://invoicing.example/settings", "no path"),
        ("https://admin@invoicing.example", "user name or password"),
        ("https://invoicing_app.example", "invalid host name"),
    ],
)
async def test_an_invalid_origin_is_refused_naming_it_and_nothing_changes(
    api: RunningApi, origin: str, reason: str
) -> None:
    account_id, key = await api.account_with_key()
    await api.accounts.set_return_origins(account_id, [DECLARED], "test")

    answer = await put_origins(api, key, ["https://other.example", origin])

    assert (answer.status, answer.error_code) == (400, "invalid_origin")
    detail = answer.json()["error"]["details"][0]
    assert detail["field"] == "return_origins[1]" and reason in detail["message"]
    assert await api.accounts.return_origins(account_id) == [DECLARED]


async def test_a_return_url_on_an_undeclared_origin_is_refused_and_creates_nothing(
    api: RunningApi,
) -> None:
    account_id, key = await api.account_with_key()

    answer = await create(api, key, "https://evil.example/phish")

    assert (answer.status, answer.error_code) == (409, "return_url_not_allowed")
    message = answer.json()["error"]["message"]
    assert "https://evil.example" in message
    assert "PUT /v1/account/return-origins" in message
    assert f"accounts origins --account {account_id} --add https://evil.example" in message
    assert await api.mailboxes.list(account_id) == []


@pytest.mark.parametrize(
    "return_url",
    [
        "https://invoicing.example.evil.example/settings",
        "https://invoicing.example:8443/settings",
        "https://evil.example/?next=https://invoicing.example",
        "http://invoicing.example/settings",
    ],
)
async def test_only_the_declared_origin_itself_is_allowed(api: RunningApi, return_url: str) -> None:
    account_id, key = await api.account_with_key()
    await api.accounts.set_return_origins(account_id, [DECLARED], "test")
    answer = await create(api, key, return_url)
    assert (answer.status, answer.error_code) == (409, "return_url_not_allowed")


async def test_a_return_url_with_a_user_name_is_malformed(api: RunningApi) -> None:
    account_id, key = await api.account_with_key()
    await api.accounts.set_return_origins(account_id, [DECLARED], "test")
    answer = await create(api, key, "https://invoicing.example@evil.example/")
    assert (answer.status, answer.error_code) == (400, "invalid_request")
    assert answer.json()["error"]["details"][0]["field"] == "return_url"


async def test_a_declared_origin_is_allowed_and_the_callback_goes_back_to_it(
    api: RunningApi,
) -> None:
    _, key = await api.account_with_key()
    await put_origins(api, key, ["https://INVOICING.example"])

    created = await create(api, key, "https://Invoicing.example:443/settings?tab=email")

    assert created.status == 201, created.body
    state, code = consent_code(created.json()["authorization_url"])
    back = await api.call("GET", f"/oauth/callback?{urlencode({'code': code, 'state': state})}")
    assert back.status == 303
    assert back.headers["Location"].startswith("https://Invoicing.example:443/settings?tab=email&")


async def test_the_daemons_own_origin_needs_no_declaration(api: RunningApi) -> None:
    _, key = await api.account_with_key()
    created = await create(api, key, f"{PUBLIC_URL}/admin")
    assert created.status == 201, created.body


async def test_another_accounts_origins_do_not_count(api: RunningApi) -> None:
    other_id, _ = await api.account_with_key(name="Other")
    await api.accounts.set_return_origins(other_id, [DECLARED], "test")
    _, key = await api.account_with_key()
    answer = await create(api, key, f"{DECLARED}/settings")
    assert (answer.status, answer.error_code) == (409, "return_url_not_allowed")


async def test_reconnecting_checks_the_return_url_too(api: RunningApi) -> None:
    account_id, key = await api.account_with_key()
    created = await api.call(
        "POST",
        "/v1/mailboxes",
        key=key,
        json_body={"provider": "microsoft", "capabilities": ["send"]},
    )
    path = f"/v1/mailboxes/{created.json()['mailbox']['id']}/connect"

    refused = await api.call("POST", path, key=key, json_body={"return_url": f"{DECLARED}/x"})
    await api.accounts.set_return_origins(account_id, [DECLARED], "test")
    allowed = await api.call("POST", path, key=key, json_body={"return_url": f"{DECLARED}/x"})

    assert (refused.status, refused.error_code) == (409, "return_url_not_allowed")
    assert allowed.status == 200, allowed.body
