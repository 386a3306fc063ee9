"""The sandbox's Google token and revoke endpoints, its scenario switches and control API.

The sandbox runs in the test's event loop; google-auth and requests are synchronous, so they run
in a thread.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any
from urllib.parse import urljoin

import aiohttp
import pytest
import requests

from mailbox_worker.sandbox import Sandbox
from mailbox_worker.sandbox.google.state import GoogleState

from ..consent_form import FormReader
from .google_helpers import (
    CLIENT_ID,
    CLIENT_SECRET,
    GRANTED,
    OTHER_USER,
    REDIRECT_URI,
    SEND,
    USER,
    Pkce,
    admin,
    authorization_url,
    connect,
    consent,
    credentials,
    exchange,
    grants,
    post,
    refresh,
    refresh_error,
)

# -- token endpoint ------------------------------------------------------------------------


async def test_a_code_is_single_use(
    sandbox: Sandbox, http: aiohttp.ClientSession, session: requests.Session
) -> None:
    pkce = Pkce.s256()
    query = await consent(http, authorization_url(sandbox, pkce))
    first = await exchange(session, sandbox, query["code"], pkce.verifier)
    assert first.status_code == 200
    again = await exchange(session, sandbox, query["code"], pkce.verifier)
    assert again.status_code == 400
    assert again.json() == {"error": "invalid_grant", "error_description": "Bad Request"}


async def test_pkce_verifier_is_checked(
    sandbox: Sandbox, http: aiohttp.ClientSession, session: requests.Session
) -> None:
    pkce = Pkce.s256()
    query = await consent(http, authorization_url(sandbox, pkce))
    wrong = await exchange(session, sandbox, query["code"], Pkce.s256().verifier)
    assert wrong.status_code == 400
    assert wrong.json() == {
        "error": "invalid_grant",
        "error_description": "Invalid code verifier.",
    }
    plain = secrets.token_urlsafe(48)
    url = authorization_url(sandbox, code_challenge=plain, code_challenge_method="plain")
    query = await consent(http, url)
    assert (await exchange(session, sandbox, query["code"], plain)).status_code == 200


async def test_client_authentication_and_request_errors(
    sandbox: Sandbox, http: aiohttp.ClientSession, session: requests.Session
) -> None:
    query = await consent(http, authorization_url(sandbox))
    bad_secret = await exchange(session, sandbox, query["code"], None, client_secret="nope")
    assert bad_secret.status_code == 401
    assert bad_secret.json() == {"error": "invalid_client", "error_description": "Unauthorized"}
    mismatch = await exchange(
        session, sandbox, query["code"], None, redirect_uri="http://127.0.0.1:9/other"
    )
    assert (mismatch.status_code, mismatch.json()["error"]) == (400, "redirect_uri_mismatch")
    basic = await post(
        session,
        sandbox.google_token_url,
        {"grant_type": "authorization_code", "code": query["code"], "redirect_uri": REDIRECT_URI},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert basic.status_code == 200, basic.text
    unsupported = await post(
        session, sandbox.google_token_url, {"grant_type": "password", "client_id": CLIENT_ID}
    )
    assert (unsupported.status_code, unsupported.json()["error"]) == (
        400,
        "unsupported_grant_type",
    )


async def test_refresh_token_only_offline_and_on_first_consent_unless_prompt_consent(
    sandbox: Sandbox, http: aiohttp.ClientSession, session: requests.Session
) -> None:
    online = await connect(http, session, sandbox, access_type="online")
    assert "refresh_token" not in online
    first_offline = await connect(http, session, sandbox)
    assert "refresh_token" in first_offline
    second = await connect(http, session, sandbox)
    assert "refresh_token" not in second
    forced = await connect(http, session, sandbox, prompt="consent")
    assert "refresh_token" in forced
    no_openid = await connect(http, session, sandbox, scope=SEND, include_granted_scopes="false")
    assert (no_openid["scope"], "id_token" in no_openid) == (SEND, False)
    # include_granted_scopes=true: the earlier scopes come along in the new token
    incremental = await connect(http, session, sandbox, scope=SEND)
    assert set(incremental["scope"].split()) == set(GRANTED)
    [grant] = await grants(http, sandbox)
    assert grant["live_refresh_tokens"] == 2


# -- revoke --------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["refresh_token", "access_token"])
async def test_revoke_kills_the_whole_grant(
    sandbox: Sandbox, http: aiohttp.ClientSession, session: requests.Session, which: str
) -> None:
    tokens = await connect(http, session, sandbox)
    answer = await post(session, sandbox.google_revoke_url, {"token": tokens[which]})
    assert (answer.status_code, answer.json()) == (200, {})
    [grant] = await grants(http, sandbox)
    assert (grant["revoked"], grant["revoked_reason"]) == (True, "client_revoked")
    assert sandbox.state.google.access_token_valid(tokens["access_token"]) is None
    message = await refresh_error(credentials(sandbox, tokens), session)
    assert "invalid_grant" in message
    assert "Token has been expired or revoked." in message
    again = await post(session, sandbox.google_revoke_url, {"token": tokens["refresh_token"]})
    assert again.status_code == 400
    assert again.json() == {
        "error": "invalid_token",
        "error_description": "Token expired or revoked",
    }
    unknown = await post(session, sandbox.google_revoke_url, {"token": "ya29.nothing"})
    assert unknown.status_code == 400
    assert sandbox.state.counters()["google.revoke"] == 3
    # a new consent after a revocation is a first consent again: a refresh token comes back
    assert "refresh_token" in await connect(http, session, sandbox)


async def test_revoke_takes_post_only(sandbox: Sandbox, session: requests.Session) -> None:
    answer = await asyncio.to_thread(
        session.get, sandbox.google_revoke_url, params={"token": "x"}, timeout=10
    )
    assert answer.status_code == 404


# -- scenario switches (docs/providers.md C4) ---------------------------------------------------


async def test_user_revoked_access_kills_all_their_grants(
    sandbox: Sandbox, http: aiohttp.ClientSession, session: requests.Session
) -> None:
    tokens = await connect(http, session, sandbox)
    status, _ = await admin(
        http, sandbox, "POST", f"google/users/{USER}/scenario", scenario="revoked"
    )
    assert status == 200
    assert "invalid_grant" in await refresh_error(credentials(sandbox, tokens), session)
    [grant] = await grants(http, sandbox)
    assert (grant["revoked"], grant["revoked_reason"]) == (True, "user_revoked")


async def test_password_change_kills_only_grants_with_gmail_scopes(
    sandbox: Sandbox, http: aiohttp.ClientSession, session: requests.Session
) -> None:
    sign_in_redirect = "https://app.example/signin"
    status, _ = await admin(
        http,
        sandbox,
        "POST",
        "google/clients",
        client_id="sign-in-only",
        client_secret="s3cret",
        redirect_uris=[sign_in_redirect],
        name="Sign-in only",
    )
    assert status == 201
    gmail_tokens = await connect(http, session, sandbox)
    url = authorization_url(
        sandbox, client_id="sign-in-only", redirect_uri=sign_in_redirect, scope="openid email"
    )
    async with http.get(url) as page:
        reader = FormReader()
        reader.feed(await page.text())
    fields = [*reader.fields, ("action", "accept")]
    async with http.post(urljoin(url, reader.action), data=fields, allow_redirects=False) as answer:
        assert answer.headers["Location"].startswith(sign_in_redirect)

    sandbox.state.google.apply_scenario(USER, "password_changed")
    assert "invalid_grant" in await refresh_error(credentials(sandbox, gmail_tokens), session)
    by_client = {grant["client_id"]: grant for grant in await grants(http, sandbox)}
    assert by_client[CLIENT_ID]["revoked_reason"] == "password_changed"
    assert by_client["sign-in-only"]["revoked"] is False


@pytest.mark.parametrize("scenario", ["testing_expired", "unused_6_months"])
async def test_refresh_token_expiry_switches(
    sandbox: Sandbox, http: aiohttp.ClientSession, session: requests.Session, scenario: str
) -> None:
    tokens = await connect(http, session, sandbox)
    status, _ = await admin(
        http, sandbox, "POST", f"google/users/{USER}/scenario", scenario=scenario
    )
    assert status == 200
    assert "invalid_grant" in await refresh_error(credentials(sandbox, tokens), session)
    # the access token lives out its hour; a new consent yields a new refresh token
    assert sandbox.state.google.access_token_valid(tokens["access_token"]) is not None
    fresh = await connect(http, session, sandbox)
    await refresh(credentials(sandbox, fresh), session)


async def test_switches_only_touch_their_user_and_reject_nonsense(
    sandbox: Sandbox, http: aiohttp.ClientSession, session: requests.Session
) -> None:
    tokens = await connect(http, session, sandbox)
    path = f"google/users/{OTHER_USER}/scenario"
    for scenario in ("revoked", "password_changed", "testing_expired", "reset"):
        assert (await admin(http, sandbox, "POST", path, scenario=scenario))[0] == 200
    await refresh(credentials(sandbox, tokens), session)
    assert (await admin(http, sandbox, "POST", path, scenario="melt"))[0] == 400
    missing = "google/users/nobody@example.com/scenario"
    assert (await admin(http, sandbox, "POST", missing, scenario="revoked"))[0] == 404


async def test_the_refresh_token_cap_silently_invalidates_the_oldest(
    sandbox: Sandbox, http: aiohttp.ClientSession, session: requests.Session
) -> None:
    status, settings = await admin(http, sandbox, "POST", "google/settings", refresh_token_cap=2)
    assert (status, settings) == (200, {"refresh_token_cap": 2})
    assert sandbox.state.google.refresh_token_cap == 2
    issued = [await connect(http, session, sandbox, prompt="consent") for _ in range(3)]
    assert "invalid_grant" in await refresh_error(credentials(sandbox, issued[0]), session)
    for tokens in issued[1:]:
        await refresh(credentials(sandbox, tokens), session)
    [grant] = await grants(http, sandbox)
    assert (grant["revoked"], grant["live_refresh_tokens"]) == (False, 2)


# -- admin registration, faults --------------------------------------------------------------


async def test_registered_users_can_consent(
    sandbox: Sandbox, http: aiohttp.ClientSession, session: requests.Session
) -> None:
    status, user = await admin(
        http, sandbox, "POST", "google/users", address="ops@northwind.example"
    )
    assert (status, user["address"]) == (201, "ops@northwind.example")
    pkce = Pkce.s256()
    url = authorization_url(sandbox, pkce, login_hint="ops@northwind.example")
    query = await consent(http, url)
    tokens = (await exchange(session, sandbox, query["code"], pkce.verifier)).json()
    assert tokens["refresh_token"].startswith("1//0")
    [grant] = await grants(http, sandbox)
    assert grant["user"] == "ops@northwind.example"


async def test_faults_on_token_and_revoke(
    sandbox: Sandbox, http: aiohttp.ClientSession, session: requests.Session
) -> None:
    tokens = await connect(http, session, sandbox)
    status, _ = await admin(
        http, sandbox, "POST", "faults", operation="google.token", kind="status", status=400
    )
    assert status == 201
    form = {
        "grant_type": "refresh_token",
        "refresh_token": tokens["refresh_token"],
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    failed = await post(session, sandbox.google_token_url, form)
    assert failed.status_code == 400
    sandbox.state.queue_fault("google.token", "status", status=503, retry_after=0)
    # google-auth retries a 503 and then succeeds
    creds = credentials(sandbox, tokens)
    await refresh(creds, session)
    assert creds.valid
    sandbox.state.queue_fault("google.revoke", "reset")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with http.post(sandbox.google_revoke_url, data={"token": tokens["refresh_token"]}):
            pass
    sandbox.state.queue_fault("google.revoke", "status", status=503)
    down = await post(session, sandbox.google_revoke_url, {"token": tokens["refresh_token"]})
    assert (down.status_code, down.json()["error"]) == (503, "temporarily_unavailable")
    [grant] = await grants(http, sandbox)
    assert grant["revoked"] is False
    done = await post(session, sandbox.google_revoke_url, {"token": tokens["refresh_token"]})
    assert done.status_code == 200


@pytest.mark.parametrize("path", ["clients", "google/clients"])
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"redirect_uris": []}, "client_id is required"),
        ({"client_id": "c", "redirect_uris": "https://x"}, "redirect_uris must be a list"),
        ({"client_id": "c", "redirect_uris": [], "name": 7}, "must be strings"),
    ],
)
async def test_client_registration_refuses_malformed_documents(
    sandbox: Sandbox, http: aiohttp.ClientSession, path: str, body: dict[str, Any], problem: str
) -> None:
    status, document = await admin(http, sandbox, "POST", path, **body)
    assert status == 400
    assert problem in json.dumps(document)


def test_a_recreated_google_account_has_a_new_sub_and_none_of_the_old_grants() -> None:
    google = GoogleState()
    first = google.users["invoices@fabrikam.example"]
    assert GoogleState().users["invoices@fabrikam.example"].subject == first.subject  # stable
    grant, _ = google.consent(first.address, "sandbox-google-client", ["openid"])

    recreated = google.add_user("invoices@fabrikam.example")

    assert recreated.subject != first.subject  # Google never reuses a sub
    assert (grant.revoked, grant.revoked_reason) == (True, "account_deleted")
    assert google.live_grant(first.address, "sandbox-google-client") is None
    chosen = google.add_user("someone@fabrikam.example", subject="123")
    assert chosen.subject == "123"
