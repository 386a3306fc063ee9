"""The sandbox's Microsoft identity + Graph mail, driven by the unmodified msal and plain HTTP.

The sandbox runs in the test's event loop; msal is synchronous, so it runs in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import secrets
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import aiohttp
import msal
import pytest
import requests

from mailbox_worker.sandbox import Sandbox, serve
from mailbox_worker.sandbox.ca import ensure_certificates
from mailbox_worker.sandbox.state import SandboxState

from .consent_form import FormReader

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
    await asyncio.sleep(1.1)  # the new access token (lifetime 1 s) has expired
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


# -- Graph mail ------------------------------------------------------------------------------


async def test_send_mail_mime_is_stored_byte_for_byte(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    message = invoice_mime()
    async with http.post(
        f"{sandbox.graph_url}/me/sendMail",
        data=mime_body(message),
        headers={**bearer(signed_in.access_token), "client-request-id": "trace-me"},
    ) as response:
        assert response.status == 202
        assert await response.read() == b""
        assert response.headers["client-request-id"] == "trace-me"
        assert response.headers["request-id"]
    [stored] = await stored_messages(http, sandbox, mailbox=BILLING, folder="sent")
    assert stored["internet_message_id"] == message["Message-ID"]
    assert stored["to"] == ["ap@fabrikam.example"]
    assert stored["from"] == BILLING
    [attachment] = stored["attachments"]
    assert attachment["name"] == "invoice-2024-001.pdf"
    assert attachment["content_type"] == "application/pdf"
    assert attachment["sha256"] == hashlib.sha256(PDF_BYTES).hexdigest()
    base = f"{sandbox.base_url}/_sandbox/messages/{stored['id']}"
    async with http.get(f"{base}/attachments/0") as response:
        assert await response.read() == PDF_BYTES
    async with http.get(f"{base}/raw") as response:
        assert response.content_type == "message/rfc822"
        assert await response.read() == message.as_bytes()
    assert (await counters(http, sandbox))["graph.sendMail"] == 1


async def test_send_mail_json_form(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    payload = {
        "message": {
            "subject": "Invoice 7",
            "body": {"contentType": "Text", "content": "Attached."},
            "toRecipients": [{"emailAddress": {"address": "ap@fabrikam.example"}}],
            "attachments": [
                {
                    "@odata.type": "#microsoft.graph.fileAttachment",
                    "name": "invoice-7.pdf",
                    "contentType": "application/pdf",
                    "contentBytes": base64.b64encode(PDF_BYTES).decode(),
                }
            ],
        },
        "saveToSentItems": True,
    }
    async with http.post(
        f"{sandbox.graph_url}/users/{BILLING}/sendMail",
        data=json.dumps(payload),
        headers=bearer(signed_in.access_token, "application/json"),
    ) as response:
        assert response.status == 202
    [stored] = await stored_messages(http, sandbox)
    assert stored["subject"] == "Invoice 7"
    assert stored["attachments"][0]["sha256"] == hashlib.sha256(PDF_BYTES).hexdigest()
    assert stored["internet_message_id"].startswith("<")


async def test_draft_create_and_send(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send", "Mail.ReadWrite"])
    message = invoice_mime()
    async with http.post(
        f"{sandbox.graph_url}/me/messages",
        data=mime_body(message),
        headers=bearer(signed_in.access_token),
    ) as response:
        assert response.status == 201
        draft = await response.json()
    assert draft["isDraft"] is True
    assert draft["internetMessageId"] == message["Message-ID"]
    assert draft["hasAttachments"] is True
    assert draft["toRecipients"][0]["emailAddress"]["address"] == "ap@fabrikam.example"
    assert {"id", "conversationId", "webLink", "createdDateTime", "from"} <= set(draft)
    assert [m["id"] for m in await stored_messages(http, sandbox, folder="drafts")] == [draft["id"]]

    send_url = f"{sandbox.graph_url}/me/messages/{draft['id']}/send"
    async with http.post(send_url, headers=bearer(signed_in.access_token)) as response:
        assert response.status == 202
    assert await stored_messages(http, sandbox, folder="drafts") == []
    async with http.post(send_url, headers=bearer(signed_in.access_token)) as response:
        assert response.status == 404
        assert (await graph_error(response))["code"] == "ErrorItemNotFound"
    assert len(await stored_messages(http, sandbox, folder="sent")) == 1


async def test_scope_enforcement_and_authentication_errors(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send", "Mail.ReadWrite"])
    # The user unticked Mail.ReadWrite: the token covers only Mail.Send.
    narrow = await sign_in(
        sandbox, http, requests_session, ["Mail.Send", "Mail.ReadWrite"], untick=("Mail.ReadWrite",)
    )
    assert "Mail.ReadWrite" not in narrow.result["scope"].split(" ")
    assert "Mail.ReadWrite" in signed_in.result["scope"].split(" ")
    async with http.post(
        f"{sandbox.graph_url}/me/messages",
        data=mime_body(invoice_mime()),
        headers=bearer(narrow.access_token),
    ) as response:
        assert response.status == 403
        assert (await graph_error(response))["code"] == "ErrorAccessDenied"

    for headers, message in (
        ({"Content-Type": "text/plain"}, "Access token is empty."),
        (bearer("not-a-token"), "CompactToken parsing failed with error code: 80049217"),
    ):
        async with http.post(
            f"{sandbox.graph_url}/me/sendMail", data=b"", headers=headers
        ) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith('Bearer realm=""')
            assert (
                'client_id="00000003-0000-0000-c000-000000000000"'
                in (response.headers["WWW-Authenticate"])
            )
            error = await graph_error(response)
            assert error["code"] == "InvalidAuthenticationToken"
            assert error["message"] == message


async def test_limits_and_message_errors(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    url, headers = f"{sandbox.graph_url}/me/sendMail", bearer(signed_in.access_token)
    too_big = b"A" * (4 * 1024 * 1024 + 4)
    async with http.post(url, data=io.BytesIO(too_big), headers=headers) as response:
        assert response.status == 413
        assert (await graph_error(response))["code"] == "RequestEntityTooLarge"
    cases = [
        (mime_body(invoice_mime(sender="ceo@contoso.example")), 403, "ErrorSendAsDenied"),
        (mime_body(invoice_mime(recipients=())), 400, "ErrorInvalidRecipients"),
        (b"this is not base64!", 400, "ErrorMimeContentInvalidBase64String"),
    ]
    for body, status, code in cases:
        async with http.post(url, data=body, headers=headers) as response:
            assert response.status == status
            assert (await graph_error(response))["code"] == code
    assert await stored_messages(http, sandbox) == []


async def test_fault_injection(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    url, headers = f"{sandbox.graph_url}/me/sendMail", bearer(signed_in.access_token)
    fault = {"operation": "graph.sendMail", "kind": "status", "status": 429, "retry_after": 7}
    async with http.post(f"{sandbox.base_url}/_sandbox/faults", json=fault) as response:
        assert response.status == 201
    async with http.post(url, data=mime_body(invoice_mime()), headers=headers) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "7"
        assert (await graph_error(response))["code"] == "ApplicationThrottled"
    assert await stored_messages(http, sandbox) == []

    sandbox.state.queue_fault("graph.sendMail", "accept_then_reset")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with http.post(url, data=mime_body(invoice_mime()), headers=headers):
            pass
    assert len(await stored_messages(http, sandbox)) == 1  # the ambiguous case: it WAS sent

    async with http.post(url, data=mime_body(invoice_mime()), headers=headers) as response:
        assert response.status == 202
    assert (await counters(http, sandbox))["graph.sendMail"] == 3


async def test_more_than_four_concurrent_requests_are_throttled(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    sandbox.state.queue_fault("graph.sendMail", "delay", delay=0.5, times=5)

    async def send() -> tuple[int, str | None]:
        async with http.post(
            f"{sandbox.graph_url}/me/sendMail",
            data=mime_body(invoice_mime()),
            headers=bearer(signed_in.access_token),
        ) as response:
            return response.status, response.headers.get("Retry-After")

    results = await asyncio.gather(*(send() for _ in range(5)))
    assert sorted(status for status, _ in results) == [202, 202, 202, 202, 429]
    assert [retry for status, retry in results if status == 429] == ["1"]


async def test_certificates_are_reused(tmp_path: Path) -> None:
    first = ensure_certificates(tmp_path)
    ca_bytes = first.ca_certificate.read_bytes()
    second = ensure_certificates(tmp_path)
    assert second.ca_certificate.read_bytes() == ca_bytes
    assert second.server_certificate.read_bytes() == first.server_certificate.read_bytes()


async def test_serve_prints_its_address_and_stops_when_cancelled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = asyncio.create_task(serve("127.0.0.1", 0, tmp_path))
    output = ""
    for _ in range(100):
        await asyncio.sleep(0.05)
        output += capsys.readouterr().out
        if "CA certificate" in output:
            break
    assert "https://127.0.0.1:" in output
    assert str(tmp_path / "sandbox-ca.pem") in output
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_large_attachment_through_an_upload_session(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send", "Mail.ReadWrite"])
    json_headers = bearer(signed_in.access_token, "application/json")
    draft_body = {
        "subject": "Big invoice",
        "toRecipients": [{"emailAddress": {"address": "ap@fabrikam.example"}}],
        "body": {"contentType": "Text", "content": "See attached."},
    }
    async with http.post(
        f"{sandbox.graph_url}/me/messages", data=json.dumps(draft_body), headers=json_headers
    ) as response:
        assert response.status == 201
        draft = await response.json()
    attachments_url = f"{sandbox.graph_url}/me/messages/{draft['id']}/attachments"
    small = {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": "terms.txt",
        "contentType": "text/plain",
        "contentBytes": base64.b64encode(b"Net 30").decode(),
    }
    async with http.post(attachments_url, data=json.dumps(small), headers=json_headers) as response:
        assert response.status == 201
        assert (await response.json())["size"] == 6

    big = secrets.token_bytes(3 * 1024 * 1024 + 500_000)
    item = {"AttachmentItem": {"attachmentType": "file", "name": "scan.pdf", "size": 1000}}
    session_url = f"{attachments_url}/createUploadSession"
    async with http.post(session_url, data=json.dumps(item), headers=json_headers) as response:
        assert response.status == 400
        code = (await graph_error(response))["code"]
        assert code == "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize"
    item["AttachmentItem"]["size"] = len(big)
    async with http.post(session_url, data=json.dumps(item), headers=json_headers) as response:
        assert response.status == 201
        session = await response.json()
    assert session["nextExpectedRanges"] == ["0-"]
    upload_url, split = session["uploadUrl"], 2 * 1024 * 1024

    async def put(start: int, end: int) -> aiohttp.ClientResponse:
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"bytes {start}-{end}/{len(big)}",
        }
        chunk = io.BytesIO(big[start : end + 1])
        async with http.put(upload_url, data=chunk, headers=headers) as answer:
            await answer.read()
            return answer

    assert (await put(split, len(big) - 1)).status == 416  # out of order
    first = await put(0, split - 1)
    assert first.status == 200
    last = await put(split, len(big) - 1)
    assert last.status == 201 and "Attachments('" in last.headers["Location"]

    [stored] = await stored_messages(http, sandbox, folder="drafts")
    names = [attachment["name"] for attachment in stored["attachments"]]
    assert names == ["terms.txt", "scan.pdf"]
    assert stored["attachments"][1]["sha256"] == hashlib.sha256(big).hexdigest()
    send_url = f"{sandbox.graph_url}/me/messages/{draft['id']}/send"
    async with http.post(send_url, headers=bearer(signed_in.access_token)) as response:
        assert response.status == 202


async def test_mailbox_without_exchange_online(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    sandbox.state.users[BILLING].mailbox_enabled = False
    async with http.post(
        f"{sandbox.graph_url}/me/sendMail",
        data=mime_body(invoice_mime()),
        headers=bearer(signed_in.access_token),
    ) as response:
        assert response.status == 404
        assert (await graph_error(response))["code"] == "MailboxNotEnabledForRESTAPI"


def test_the_directory_keeps_its_ids_across_runs_and_a_recreated_user_gets_a_new_one() -> None:
    first, second = SandboxState(), SandboxState()
    user = first.users["billing@contoso.example"]
    again = second.users["billing@contoso.example"]
    assert (user.tenant_id, user.object_id) == (again.tenant_id, again.object_id)

    recreated = first.add_user("billing@contoso.example", "Someone Else")

    assert recreated.object_id != user.object_id  # Entra never reuses an oid
    assert recreated.tenant_id == user.tenant_id
    assert first.add_user("x@contoso.example", object_id="chosen").object_id == "chosen"
