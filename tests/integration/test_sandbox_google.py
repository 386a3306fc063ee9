"""The sandbox's Google OAuth 2.0, driven by plain HTTP and the unmodified google-auth.

The sandbox runs in the test's event loop; google-auth and requests are synchronous, so they run
in a thread. The consent page is played with aiohttp like a browser without JavaScript.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import aiohttp
import google.auth.exceptions
import google.auth.transport.requests
import google.oauth2.credentials
import google.oauth2.id_token
import pytest
import requests

from mailbox_worker.sandbox import Sandbox
from mailbox_worker.sandbox.google.state import GoogleState

from .consent_form import FormReader

CLIENT_ID = "sandbox-google-client"
CLIENT_SECRET = "sandbox-google-secret"
REDIRECT_URI = "http://127.0.0.1:8765/oauth/google"
USER = "invoices@fabrikam.example"
OTHER_USER = "billing@fabrikam.example"
SEND = "https://www.googleapis.com/auth/gmail.send"
COMPOSE = "https://www.googleapis.com/auth/gmail.compose"
USERINFO_EMAIL = "https://www.googleapis.com/auth/userinfo.email"
REQUESTED = ["openid", "email", SEND, COMPOSE]
GRANTED = ["openid", USERINFO_EMAIL, SEND, COMPOSE]


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def session(requests_session: requests.Session) -> requests.Session:
    return requests_session


# -- helpers -------------------------------------------------------------------------------


@dataclass
class Pkce:
    verifier: str
    challenge: str

    @classmethod
    def s256(cls) -> Pkce:
        verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(verifier.encode()).digest()
        return cls(verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode())


def authorization_url(sandbox: Sandbox, pkce: Pkce | None = None, /, **overrides: str) -> str:
    parameters = {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "scope": " ".join(REQUESTED),
        "access_type": "offline",
        "state": "opaque-state",
        "include_granted_scopes": "true",
        "login_hint": USER,
    }
    if pkce is not None:
        parameters |= {"code_challenge": pkce.challenge, "code_challenge_method": "S256"}
    parameters |= overrides
    return f"{sandbox.google_auth_url}?{urlencode(parameters)}"


async def consent(
    http: aiohttp.ClientSession,
    url: str,
    *,
    action: str = "accept",
    untick: tuple[str, ...] = (),
    login: str | None = None,
) -> dict[str, str]:
    """Open the consent page, submit it, and return the query of the redirect to the client."""
    async with http.get(url) as page:
        assert page.status == 200, await page.text()
        reader = FormReader()
        reader.feed(await page.text())
    fields = [
        (name, login if name == "login" and login is not None else value)
        for name, value in reader.fields
    ]
    fields += [("granted_scope", scope) for scope in reader.checkboxes if scope not in untick]
    fields.append(("action", action))
    async with http.post(urljoin(url, reader.action), data=fields, allow_redirects=False) as answer:
        assert answer.status == 302, await answer.text()
        location = answer.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    return dict(parse_qsl(urlsplit(location).query))


async def post(
    session: requests.Session, url: str, data: dict[str, str], **kwargs: Any
) -> requests.Response:
    return await asyncio.to_thread(session.post, url, data=data, timeout=10, **kwargs)


async def exchange(
    session: requests.Session,
    sandbox: Sandbox,
    code: str,
    verifier: str | None,
    **overrides: str,
) -> requests.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": REDIRECT_URI,
    }
    if verifier is not None:
        form["code_verifier"] = verifier
    return await post(session, sandbox.google_token_url, form | overrides)


async def connect(
    http: aiohttp.ClientSession,
    session: requests.Session,
    sandbox: Sandbox,
    untick: tuple[str, ...] = (),
    **overrides: str,
) -> dict[str, Any]:
    """A full consent + PKCE code exchange; the token response."""
    pkce = Pkce.s256()
    query = await consent(http, authorization_url(sandbox, pkce, **overrides), untick=untick)
    answer = await exchange(session, sandbox, query["code"], pkce.verifier)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def credentials(
    sandbox: Sandbox, tokens: dict[str, Any], scopes: list[str] | None = None
) -> google.oauth2.credentials.Credentials:
    return google.oauth2.credentials.Credentials(  # type: ignore[no-untyped-call]
        tokens["access_token"],
        refresh_token=tokens.get("refresh_token"),
        token_uri=sandbox.google_token_url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        scopes=scopes if scopes is not None else [SEND, COMPOSE],
    )


async def refresh(creds: google.oauth2.credentials.Credentials, session: requests.Session) -> None:
    await asyncio.to_thread(creds.refresh, google.auth.transport.requests.Request(session))


async def refresh_error(
    creds: google.oauth2.credentials.Credentials, session: requests.Session
) -> str:
    with pytest.raises(google.auth.exceptions.RefreshError) as raised:
        await refresh(creds, session)
    return str(raised.value)


async def admin(
    http: aiohttp.ClientSession, sandbox: Sandbox, method: str, path: str, **body: Any
) -> tuple[int, Any]:
    async with http.request(method, f"{sandbox.base_url}/_sandbox/{path}", json=body) as answer:
        return answer.status, await answer.json()


async def grants(http: aiohttp.ClientSession, sandbox: Sandbox) -> list[dict[str, Any]]:
    status, document = await admin(http, sandbox, "GET", "google/grants")
    assert status == 200
    return list(document["grants"])


# -- the happy path ------------------------------------------------------------------------


async def test_consent_code_exchange_and_google_auth_refresh(
    sandbox: Sandbox, http: aiohttp.ClientSession, session: requests.Session
) -> None:
    assert sandbox.google_auth_url == f"https://127.0.0.1:{sandbox.port}/o/oauth2/v2/auth"
    assert sandbox.google_token_url == f"https://127.0.0.1:{sandbox.port}/token"
    assert sandbox.google_revoke_url == f"https://127.0.0.1:{sandbox.port}/revoke"
    pkce = Pkce.s256()
    query = await consent(http, authorization_url(sandbox, pkce))
    assert query["state"] == "opaque-state"
    assert query["code"].startswith("4/0A")
    assert set(query["scope"].split()) == {*REQUESTED, USERINFO_EMAIL}

    answer = await exchange(session, sandbox, query["code"], pkce.verifier)
    assert answer.status_code == 200, answer.text
    tokens = answer.json()
    assert set(tokens) == {
        "access_token",
        "expires_in",
        "refresh_token",
        "scope",
        "token_type",
        "id_token",
    }
    assert tokens["access_token"].startswith("ya29.")
    assert tokens["refresh_token"].startswith("1//0")
    assert (tokens["expires_in"], tokens["token_type"]) == (3599, "Bearer")
    assert set(tokens["scope"].split()) == set(GRANTED)  # email comes back spelled long

    request = google.auth.transport.requests.Request(session)
    claims = await asyncio.to_thread(
        google.oauth2.id_token.verify_token,
        tokens["id_token"],
        request,
        CLIENT_ID,
        f"{sandbox.base_url}/oauth2/v3/certs",
    )
    assert claims["iss"] == "https://accounts.google.com"
    assert (claims["email"], claims["email_verified"]) == (USER, True)
    assert claims["sub"].isdigit()

    creds = credentials(sandbox, tokens)
    await refresh(creds, session)
    assert creds.token != tokens["access_token"]
    assert str(creds.token).startswith("ya29.")
    assert creds.refresh_token == tokens["refresh_token"]  # Google sends no new one
    assert set(creds.granted_scopes or []) == {SEND, COMPOSE}
    assert creds.valid

    [grant] = await grants(http, sandbox)
    assert (grant["client_id"], grant["user"], grant["revoked"]) == (CLIENT_ID, USER, False)
    assert set(grant["scopes"]) == set(GRANTED)
    assert grant["revoked_reason"] is None
    assert grant["created_at"].endswith("Z")
    counters = sandbox.state.counters()
    assert counters["google.consent.accept"] == 1
    assert counters["google.token.authorization_code"] == 1
    assert counters["google.token.refresh_token"] == 1


async def test_refresh_without_scope_echoes_the_grant_and_a_subset_narrows_it(
    sandbox: Sandbox, http: aiohttp.ClientSession, session: requests.Session
) -> None:
    tokens = await connect(http, session, sandbox)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": tokens["refresh_token"],
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    whole = (await post(session, sandbox.google_token_url, form)).json()
    assert set(whole["scope"].split()) == set(GRANTED)
    assert "refresh_token" not in whole
    assert "id_token" in whole
    narrow = (await post(session, sandbox.google_token_url, form | {"scope": SEND})).json()
    assert narrow["scope"] == SEND
    assert "id_token" not in narrow
    wider = await post(
        session, sandbox.google_token_url, form | {"scope": "https://mail.google.com/"}
    )
    assert (wider.status_code, wider.json()["error"]) == (400, "invalid_scope")


# -- consent page --------------------------------------------------------------------------


async def test_consent_page_form_conventions(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    async with http.get(authorization_url(sandbox)) as page:
        reader = FormReader()
        reader.feed(await page.text())
    assert reader.action == "/o/oauth2/v2/auth"
    assert reader.checkboxes == [SEND, COMPOSE]  # sign-in scopes have no checkbox
    fields = dict(reader.fields)
    assert fields["login"] == USER
    assert fields["scope"] == " ".join(REQUESTED)
    assert fields["auth_request"]


async def test_cancel_redirects_with_access_denied(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    query = await consent(http, authorization_url(sandbox), action="cancel")
    assert query == {"error": "access_denied", "state": "opaque-state"}
    assert sandbox.state.counters()["google.consent.cancel"] == 1
    assert await grants(http, sandbox) == []


async def test_granular_consent_returns_only_the_granted_scopes(
    sandbox: Sandbox, http: aiohttp.ClientSession, session: requests.Session
) -> None:
    pkce = Pkce.s256()
    query = await consent(http, authorization_url(sandbox, pkce), untick=(COMPOSE,))
    assert COMPOSE not in query["scope"].split()
    assert SEND in query["scope"].split()
    tokens = (await exchange(session, sandbox, query["code"], pkce.verifier)).json()
    assert set(tokens["scope"].split()) == {"openid", USERINFO_EMAIL, SEND}
    [grant] = await grants(http, sandbox)
    assert COMPOSE not in grant["scopes"]

    narrow = credentials(sandbox, tokens, scopes=[SEND])
    await refresh(narrow, session)
    assert narrow.granted_scopes == [SEND]
    asking_more = credentials(sandbox, tokens, scopes=[SEND, COMPOSE])
    assert "invalid_scope" in await refresh_error(asking_more, session)


async def test_an_unknown_account_is_asked_again(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    url = authorization_url(sandbox)
    async with http.get(url) as page:
        reader = FormReader()
        reader.feed(await page.text())
    fields = [(n, "nobody@example.com" if n == "login" else v) for n, v in reader.fields]
    fields.append(("action", "accept"))
    async with http.post(urljoin(url, reader.action), data=fields, allow_redirects=False) as answer:
        assert answer.status == 200
        again = FormReader()
        again.feed(await answer.text())
    assert again.error == "Couldn't find your Google Account"


async def test_a_driver_dropping_hidden_fields_still_works(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    """Like the project's demo driver, which drops every field whose value ends in the unticked
    scope — the hidden ``scope`` too. The request is kept server-side under ``auth_request``."""
    url = authorization_url(sandbox, scope=f"openid email {SEND} {COMPOSE}")
    async with http.get(url) as page:
        reader = FormReader()
        reader.feed(await page.text())
    fields = [
        (name, value)
        for name, value in reader.fields + [("granted_scope", s) for s in reader.checkboxes]
        if not value.endswith("gmail.compose")
    ]
    fields.append(("action", "accept"))
    async with http.post(urljoin(url, reader.action), data=fields, allow_redirects=False) as answer:
        assert answer.status == 302
        query = dict(parse_qsl(urlsplit(answer.headers["Location"]).query))
    assert "code" in query
    assert COMPOSE not in query["scope"].split()


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"scope": "openid https://www.googleapis.com/auth/drive"}, "invalid_scope"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": ""}, "invalid_request"),
        ({"access_type": "forever"}, "invalid_request"),
        ({"code_challenge": "x" * 43, "code_challenge_method": "S512"}, "invalid_request"),
    ],
)
async def test_authorize_errors_are_redirected_when_the_redirect_uri_is_valid(
    sandbox: Sandbox, http: aiohttp.ClientSession, overrides: dict[str, str], error: str
) -> None:
    async with http.get(authorization_url(sandbox, **overrides), allow_redirects=False) as answer:
        assert answer.status == 302
        query = dict(parse_qsl(urlsplit(answer.headers["Location"]).query))
    assert (query["error"], query["state"]) == (error, "opaque-state")


@pytest.mark.parametrize(
    ("overrides", "shown"),
    [
        ({"client_id": "nobody"}, "Error 401: invalid_client"),
        ({"redirect_uri": "https://evil.example/callback"}, "Error 400: redirect_uri_mismatch"),
        ({"redirect_uri": ""}, "Error 400: invalid_request"),
    ],
)
async def test_authorize_errors_without_a_valid_redirect_are_a_page(
    sandbox: Sandbox, http: aiohttp.ClientSession, overrides: dict[str, str], shown: str
) -> None:
    async with http.get(authorization_url(sandbox, **overrides), allow_redirects=False) as answer:
        assert answer.status == 400
        assert shown in await answer.text()


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
