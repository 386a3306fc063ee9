"""The sandbox's Microsoft identity platform, driven by the unmodified msal and plain HTTP.

The sandbox runs in the test's event loop; msal is synchronous, so it runs in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets

import aiohttp
import pytest
import requests

from mailbox_worker.sandbox import Sandbox
from mailbox_worker.sandbox.state import SandboxState

from .microsoft_helpers import (
    BILLING,
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    bearer,
    consent,
    counters,
    graph_error,
    invoice_mime,
    mime_body,
    new_application,
    sign_in,
)

# -- identity ------------------------------------------------------------------------------


async def test_msal_auth_code_flow_then_silent_refresh_rotates_the_refresh_token(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    result = signed_in.result
    assert result["token_type"] == "Bearer"
    assert result["refresh_token"].startswith("1.AQ")
    assert "Mail.Send" in result["scope"].split(" ")
    claims = result["id_token_claims"]
    assert claims["preferred_username"] == BILLING
    assert claims["aud"] == CLIENT_ID
    user = sandbox.state.find_user(BILLING)
    assert user is not None and claims["oid"] == user.object_id
    accounts = await asyncio.to_thread(signed_in.application.get_accounts)
    assert [account["username"] for account in accounts] == [BILLING]
    assert accounts[0]["home_account_id"] == f"{user.object_id}.{user.tenant_id}"

    cached = await asyncio.to_thread(
        signed_in.application.acquire_token_silent, ["Mail.Send"], accounts[0]
    )
    assert cached is not None and cached["access_token"] == signed_in.access_token
    before = await counters(http, sandbox)

    sandbox.state.access_token_lifetime = 1
    refreshed = await asyncio.to_thread(
        signed_in.application.acquire_token_silent, ["Mail.Send"], accounts[0], force_refresh=True
    )
    assert refreshed is not None and refreshed["access_token"] != signed_in.access_token
    sandbox.state.advance(2)  # the new access token (lifetime 1 s) has expired
    async with http.post(
        f"{sandbox.graph_url}/me/sendMail",
        data=mime_body(invoice_mime()),
        headers=bearer(refreshed["access_token"]),
    ) as response:
        assert response.status == 401
        assert (await graph_error(response))["message"].startswith("Access token has expired")

    cache = signed_in.application.token_cache
    [old_entry] = cache.search(cache.CredentialType.REFRESH_TOKEN)
    old_refresh = old_entry["secret"]
    again = await asyncio.to_thread(
        signed_in.application.acquire_token_silent, ["Mail.Send"], accounts[0]
    )
    assert again is not None and again["access_token"] != refreshed["access_token"]
    [new_entry] = cache.search(cache.CredentialType.REFRESH_TOKEN)
    new_refresh = new_entry["secret"]
    assert new_refresh != old_refresh
    after = await counters(http, sandbox)
    assert (
        after["identity.token.refresh_token"] == before.get("identity.token.refresh_token", 0) + 2
    )

    # Rotation does not revoke: the old refresh token still works (docs/providers.md A4).
    still = await asyncio.to_thread(
        signed_in.application.acquire_token_by_refresh_token, old_refresh, ["Mail.Send"]
    )
    assert "access_token" in still, still


async def test_discovery_document(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    url = f"{sandbox.authority_url()}/v2.0/.well-known/openid-configuration"
    async with http.get(url) as response:
        document = await response.json()
    tenant_id = sandbox.state.users[BILLING].tenant_id
    assert document["token_endpoint"] == f"{sandbox.base_url}/{tenant_id}/oauth2/v2.0/token"
    assert document["authorization_endpoint"].startswith(sandbox.base_url)
    assert document["issuer"] == f"{sandbox.base_url}/{tenant_id}/v2.0"
    assert "form_post" in document["response_modes_supported"]
    async with http.get(document["jwks_uri"]) as response:
        assert (await response.json())["keys"][0]["kty"] == "RSA"
    async with http.get(f"{sandbox.base_url}/nowhere/v2.0/.well-known/openid-configuration") as bad:
        assert bad.status == 400
        assert (await bad.json())["error_codes"] == [90002]


async def test_cancel_unknown_login_and_unregistered_redirect(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    application = await new_application(sandbox, requests_session)
    with pytest.warns(UserWarning, match="form_post"):
        flow = application.initiate_auth_code_flow(scopes=["Mail.Send"], redirect_uri=REDIRECT_URI)
    status, answer, _ = await consent(http, flow["auth_uri"], action="cancel")
    assert status == 302  # response_mode=query
    assert answer["error"] == "access_denied"
    assert answer["error_description"] == (
        "AADSTS65004: User declined to consent to access the app."
    )
    assert answer["state"] == flow["state"]

    status, _, page = await consent(http, flow["auth_uri"], login="nobody@contoso.example")
    assert status == 200 and page.error and "username may be incorrect" in page.error

    sandbox.state.register_client(
        "strict-app", "s3cret", ["https://app.example/callback"], "Strict"
    )
    url = (
        f"{sandbox.authority_url()}/oauth2/v2.0/authorize?client_id=strict-app&response_type=code"
        "&scope=Mail.Send&redirect_uri=http://127.0.0.1:9/callback"
    )
    async with http.get(url, allow_redirects=False) as response:
        assert response.status == 400
        assert "AADSTS50011" in await response.text()
    async with http.get(url.replace("strict-app", "ghost"), allow_redirects=False) as response:
        assert response.status == 400
        assert "AADSTS700016" in await response.text()


async def test_code_is_single_use_and_pkce_and_secret_are_checked(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    challenge_text = challenge.rstrip(b"=").decode()
    auth_uri = (
        f"{sandbox.authority_url()}/oauth2/v2.0/authorize?client_id={CLIENT_ID}"
        f"&response_type=code&redirect_uri={REDIRECT_URI}&state=xyz"
        "&scope=offline_access%20Mail.Send&code_challenge_method=S256"
        f"&code_challenge={challenge_text}&login_hint={BILLING}"
    )
    _, answer, _ = await consent(http, auth_uri)
    token_url = f"{sandbox.authority_url()}/oauth2/v2.0/token"
    form = {
        "grant_type": "authorization_code",
        "client_id": CLIENT_ID,
        "code": answer["code"],
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
        "client_secret": CLIENT_SECRET,
    }
    async with http.post(token_url, data={**form, "code_verifier": "x" * 43}) as response:
        assert response.status == 400
        assert (await response.json())["error_codes"] == [501481]
    async with http.post(token_url, data={**form, "client_secret": "wrong"}) as response:
        assert response.status == 401
        assert (await response.json())["error"] == "invalid_client"
    basic = {"Authorization": aiohttp.encode_basic_auth(CLIENT_ID, CLIENT_SECRET)}
    without_secret = {key: value for key, value in form.items() if key != "client_secret"}
    async with http.post(token_url, data=without_secret, headers=basic) as response:
        assert response.status == 200
        tokens = await response.json()
    assert set(tokens) == {
        "token_type", "scope", "expires_in", "ext_expires_in", "access_token", "refresh_token",
    }  # fmt: skip
    assert tokens["scope"] == "offline_access Mail.Send"
    async with http.post(token_url, data=form) as response:
        assert response.status == 400
        error = await response.json()
    assert error["error"] == "invalid_grant" and error["error_codes"] == [54005]
    assert set(error) >= {"error_description", "timestamp", "trace_id", "correlation_id"}
    assert "\r\nTrace ID: " in error["error_description"]
    assert error["error_uri"].endswith("code=54005")


@pytest.mark.parametrize(
    ("scenario", "error", "code"),
    [
        ("revoke_sessions", "invalid_grant", 50173),
        ("refresh_token_inactive", "invalid_grant", 700082),
        ("consent_removed", "invalid_grant", 65001),
        ("interaction_required", "interaction_required", 50076),
    ],
)
async def test_refresh_failure_scenarios_reach_msal(
    sandbox: Sandbox,
    http: aiohttp.ClientSession,
    requests_session: requests.Session,
    scenario: str,
    error: str,
    code: int,
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    async with http.post(
        f"{sandbox.base_url}/_sandbox/users/{BILLING}/scenario", json={"scenario": scenario}
    ) as response:
        assert response.status == 200
    result = await asyncio.to_thread(
        signed_in.application.acquire_token_by_refresh_token,
        signed_in.refresh_token,
        ["Mail.Send"],
    )
    assert result["error"] == error
    assert result["error_codes"] == [code]
    assert result["error_description"].startswith(f"AADSTS{code}:")


async def test_graph_revoke_sign_in_sessions_kills_refresh_tokens(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(
        sandbox, http, requests_session, ["Mail.Send", "User.RevokeSessions.All"]
    )
    async with http.post(
        f"{sandbox.graph_url}/me/revokeSignInSessions", headers=bearer(signed_in.access_token)
    ) as response:
        assert response.status == 200
        assert await response.json() == {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Edm.Boolean",
            "value": True,
        }
    result = await asyncio.to_thread(
        signed_in.application.acquire_token_by_refresh_token,
        signed_in.refresh_token,
        ["Mail.Send"],
    )
    assert result["error"] == "invalid_grant" and result["error_codes"] == [50173]


def test_the_directory_keeps_its_ids_across_runs_and_a_recreated_user_gets_a_new_one() -> None:
    first, second = SandboxState(), SandboxState()
    user = first.users["billing@contoso.example"]
    again = second.users["billing@contoso.example"]
    assert (user.tenant_id, user.object_id) == (again.tenant_id, again.object_id)

    recreated = first.add_user("billing@contoso.example", "Someone Else")

    assert recreated.object_id != user.object_id  # Entra never reuses an oid
    assert recreated.tenant_id == user.tenant_id
    assert first.add_user("x@contoso.example", object_id="chosen").object_id == "chosen"
