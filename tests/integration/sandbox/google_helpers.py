"""What the Google sandbox tests share: authorization URLs, the consent page played like a
browser, the token endpoint through plain HTTP and google-auth, the control API.

google-auth and requests are synchronous, so they run in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
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

from ..consent_form import FormReader

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
