"""What the Microsoft sandbox tests share: msal sign-in through the consent page, Graph requests
and the inspection API.

msal is synchronous, so it runs in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import aiohttp
import msal
import requests

from mailbox_worker.sandbox import Sandbox

from ..consent_form import FormReader

CLIENT_ID = "sandbox-client"
CLIENT_SECRET = "sandbox-secret"
REDIRECT_URI = "http://127.0.0.1:8765/callback"
BILLING = "billing@contoso.example"
PDF_BYTES = b"%PDF-1.4\n" + secrets.token_bytes(20_000) + b"\n%%EOF\n"


# -- fixtures ------------------------------------------------------------------------------


@dataclass
class SignedIn:
    """An msal application after a completed auth-code flow."""

    application: msal.ConfidentialClientApplication
    result: dict[str, Any]

    @property
    def access_token(self) -> str:
        return str(self.result["access_token"])

    @property
    def refresh_token(self) -> str:
        return str(self.result["refresh_token"])


async def new_application(
    sandbox: Sandbox, session: requests.Session
) -> msal.ConfidentialClientApplication:
    return await asyncio.to_thread(
        msal.ConfidentialClientApplication,
        CLIENT_ID,
        client_credential=CLIENT_SECRET,
        authority=sandbox.authority_url(),
        instance_discovery=False,
        http_client=session,
    )


async def consent(
    http: aiohttp.ClientSession,
    auth_uri: str,
    *,
    action: str = "accept",
    login: str | None = None,
    untick: tuple[str, ...] = (),
) -> tuple[int, dict[str, str], FormReader]:
    """Drive the consent page like a browser; returns (status, redirect parameters, form)."""
    async with http.get(auth_uri) as page:
        assert page.status == 200
        form = FormReader()
        form.feed(await page.text())
    data = [(name, value) for name, value in form.fields if not (login and name == "login")]
    if login:
        data.append(("login", login))
    data += [("granted_scope", scope) for scope in form.checkboxes if scope not in untick]
    data.append(("action", action))
    async with http.post(
        urljoin(auth_uri, form.action), data=data, allow_redirects=False
    ) as answer:
        if answer.status == 302:
            return 302, dict(parse_qsl(urlsplit(answer.headers["Location"]).query)), form
        reread = FormReader()
        reread.feed(await answer.text())
        if reread.action.startswith(REDIRECT_URI):  # response_mode=form_post
            return answer.status, dict(reread.fields), reread
        return answer.status, {}, reread


async def sign_in(
    sandbox: Sandbox,
    http: aiohttp.ClientSession,
    session: requests.Session,
    scopes: list[str],
    *,
    untick: tuple[str, ...] = (),
) -> SignedIn:
    application = await new_application(sandbox, session)
    flow = await asyncio.to_thread(
        application.initiate_auth_code_flow,
        scopes=scopes,
        redirect_uri=REDIRECT_URI,
        login_hint=BILLING,
        response_mode="form_post",  # msal warns about anything else
    )
    status, answer, _ = await consent(http, flow["auth_uri"], untick=untick)
    assert status == 200 and "code" in answer, answer
    result = await asyncio.to_thread(application.acquire_token_by_auth_code_flow, flow, answer)
    assert "access_token" in result, result
    return SignedIn(application, result)


def invoice_mime(
    sender: str = BILLING, recipients: tuple[str, ...] = ("ap@fabrikam.example",)
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Contoso Billing <{sender}>"
    if recipients:
        message["To"] = ", ".join(recipients)
    message["Subject"] = "Invoice 2024-001"
    message["Message-ID"] = make_msgid(domain="contoso.example")
    message.set_content("Please find the invoice attached.")
    message.add_attachment(
        PDF_BYTES, maintype="application", subtype="pdf", filename="invoice-2024-001.pdf"
    )
    return message


def bearer(token: str, content_type: str = "text/plain") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": content_type}


def mime_body(message: EmailMessage) -> bytes:
    return base64.b64encode(message.as_bytes())


async def graph_error(response: aiohttp.ClientResponse) -> dict[str, Any]:
    document = await response.json()
    error = document["error"]
    assert set(error["innerError"]) >= {"request-id", "date", "client-request-id"}
    assert response.headers["request-id"] == error["innerError"]["request-id"]
    return dict(error)


async def stored_messages(http: aiohttp.ClientSession, sandbox: Sandbox, **query: str) -> list[Any]:
    async with http.get(f"{sandbox.base_url}/_sandbox/messages", params=query) as response:
        assert response.status == 200
        return list((await response.json())["messages"])


async def counters(http: aiohttp.ClientSession, sandbox: Sandbox) -> dict[str, int]:
    async with http.get(f"{sandbox.base_url}/_sandbox/counters") as response:
        return dict((await response.json())["counters"])
