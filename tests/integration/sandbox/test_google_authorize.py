"""The sandbox's Google authorization endpoint and consent page, then the code exchange and
refresh through plain HTTP and the unmodified google-auth.

The sandbox runs in the test's event loop; google-auth and requests are synchronous, so they run
in a thread. The consent page is played with aiohttp like a browser without JavaScript.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl, urljoin, urlsplit

import aiohttp
import google.auth.exceptions
import google.auth.transport.requests
import google.oauth2.credentials
import google.oauth2.id_token
import pytest
import requests

from mailbox_worker.sandbox import Sandbox

from ..consent_form import FormReader
from .google_helpers import (
    CLIENT_ID,
    CLIENT_SECRET,
    COMPOSE,
    GRANTED,
    REQUESTED,
    SEND,
    USER,
    USERINFO_EMAIL,
    Pkce,
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
