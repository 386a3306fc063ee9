"""The Microsoft sandbox where clients other than the daemon found it unlike Graph and Entra:
parameter-name case, recipients that are not addresses, HTML bodies, the per-mailbox concurrency
limit, calls it does not simulate, and refresh-token rotation (docs/providers.md A3, A4, B1-B5).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import requests

from mailbox_worker.sandbox import Sandbox

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
    sign_in,
    stored_messages,
)

HTML = (
    "<html><head><style>p { color: red; }</style></head><body>"
    "<p>Invoice&nbsp;2024-001 &amp; terms</p>\n\n  <p>Total:   <b>10&euro;</b></p>"
    "</body></html>"
)


def send_mail_document(address: str) -> dict[str, object]:
    """A sendMail body with the names as Graph's metadata spells them (what the SDKs send)."""
    return {
        "Message": {
            "Subject": "Invoice 2024-001",
            "Body": {"ContentType": "HTML", "Content": HTML},
            "ToRecipients": [{"EmailAddress": {"Address": address, "Name": "AP"}}],
        },
        "SaveToSentItems": False,
    }


async def test_parameter_and_property_names_are_read_regardless_of_case(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    async with http.post(
        f"{sandbox.graph_url}/me/sendMail",
        data=json.dumps(send_mail_document("ap@fabrikam.example")),
        headers=bearer(signed_in.access_token, "application/json"),
    ) as response:
        assert response.status == 202, await response.text()
    [stored] = await stored_messages(http, sandbox, mailbox=BILLING)
    assert (stored["subject"], stored["to"]) == ("Invoice 2024-001", ["ap@fabrikam.example"])
    async with http.get(f"{sandbox.base_url}/_sandbox/messages/{stored['id']}/raw") as raw:
        assert b"Content-Type: text/html" in await raw.read()


async def test_a_recipient_that_is_not_an_address_is_error_invalid_recipients(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send", "Mail.ReadWrite"])
    json_headers = bearer(signed_in.access_token, "application/json")
    attempts = [
        ("sendMail", json.dumps(send_mail_document("not an address")), json_headers),
        ("sendMail", json.dumps(send_mail_document("ap@@fabrikam")), json_headers),
        ("messages", json.dumps(send_mail_document("<ap>")["Message"]), json_headers),
        (
            "sendMail",
            mime_body(invoice_mime(recipients=("accounts payable",))),
            bearer(signed_in.access_token),
        ),
    ]
    for path, body, headers in attempts:
        async with http.post(
            f"{sandbox.graph_url}/me/{path}", data=body, headers=headers
        ) as answer:
            assert answer.status == 400
            assert (await graph_error(answer))["code"] == "ErrorInvalidRecipients"
    assert await stored_messages(http, sandbox) == []


async def test_an_html_draft_keeps_html_and_its_preview_is_plain_text(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.ReadWrite"])
    headers = bearer(signed_in.access_token, "application/json")
    url = f"{sandbox.graph_url}/me/messages"
    html_draft = {"subject": "s", "body": {"contentType": "html", "content": HTML}}
    async with http.post(url, data=json.dumps(html_draft), headers=headers) as response:
        assert response.status == 201
        created = await response.json()
    assert created["body"]["contentType"] == "html"
    assert "<p>Invoice&nbsp;2024-001 &amp; terms</p>" in created["body"]["content"]
    # Tags and the style sheet gone, entities decoded (the no-break space too), runs of
    # whitespace one space.
    assert created["bodyPreview"] == "Invoice 2024-001 & terms Total: 10€"

    long_text = "word " * 100
    text_draft = {"subject": "s", "body": {"contentType": "text", "content": long_text}}
    async with http.post(url, data=json.dumps(text_draft), headers=headers) as response:
        created = await response.json()
    assert created["body"]["contentType"] == "text"
    assert created["body"]["content"].split() == long_text.split()  # as stored in MIME
    assert created["bodyPreview"] == long_text[:255]


async def test_requests_count_against_the_mailbox_from_arrival_until_answered(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    """Four requests whose bodies are still arriving hold the (client, mailbox) pair's four
    slots; a fifth is 429 ApplicationThrottled with Retry-After (docs/providers.md B5)."""
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    url = f"{sandbox.graph_url}/me/sendMail"
    body = mime_body(invoice_mime())
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield body[:100]
        await release.wait()
        yield body[100:]

    async def send(data: object) -> tuple[int, str | None, str]:
        async with http.post(url, data=data, headers=bearer(signed_in.access_token)) as answer:
            text = await answer.text()
            return answer.status, answer.headers.get("Retry-After"), text

    slow = [asyncio.create_task(send(slow_body())) for _ in range(4)]
    async with asyncio.timeout(10):
        while sum(sandbox.state.in_flight.values()) < 4:
            await asyncio.sleep(0.01)
    status, retry_after, text = await send(body)
    release.set()
    assert (status, retry_after) == (429, str(sandbox.state.throttle_retry_after))
    error = json.loads(text)["error"]
    assert (error["code"], error["message"]) == (
        "ApplicationThrottled",
        "Application is over its MailboxConcurrency limit.",
    )
    assert [result[0] for result in await asyncio.gather(*slow)] == [202] * 4
    assert len(await stored_messages(http, sandbox)) == 4
    assert sandbox.state.in_flight == {}
    async with http.get(f"{sandbox.base_url}/_sandbox/concurrency") as response:
        assert (await response.json())["peak_in_flight"] == {BILLING.lower(): 4}


async def test_with_latency_concurrent_sends_beyond_four_are_throttled(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    async with http.post(
        f"{sandbox.base_url}/_sandbox/settings", json={"graph_latency": 0.5}
    ) as response:
        assert (await response.json())["graph_latency"] == 0.5

    async def send() -> tuple[int, str | None]:
        async with http.post(
            f"{sandbox.graph_url}/me/sendMail",
            data=mime_body(invoice_mime()),
            headers=bearer(signed_in.access_token),
        ) as answer:
            return answer.status, answer.headers.get("Retry-After")

    results = await asyncio.gather(*(send() for _ in range(6)))
    statuses = sorted(status for status, _ in results)
    # Which request finds the slots taken depends on arrival; at least the sixth must.
    assert 429 in statuses and statuses.count(202) <= 4
    assert all(retry == "1" for status, retry in results if status == 429)
    throttled = (await counters(http, sandbox))["graph.throttled.mailbox_concurrency"]
    assert throttled == statuses.count(429)
    assert len(await stored_messages(http, sandbox)) == statuses.count(202)


async def test_calls_it_does_not_simulate_answer_as_graph_would(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    send_only = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    both = await sign_in(sandbox, http, requests_session, ["Mail.ReadWrite", "User.Read"])
    cases = [
        (send_only, "GET", "/me/messages", 403, "ErrorAccessDenied"),
        (send_only, "GET", "/me", 403, "Authorization_RequestDenied"),
        (send_only, "GET", f"/users/{BILLING}/mailFolders/inbox", 403, "ErrorAccessDenied"),
        (both, "GET", "/me/messages", 501, "NotImplemented"),
        (both, "PATCH", "/me/messages/AAMk1", 501, "NotImplemented"),
        (both, "GET", "/me/calendar/events", 501, "NotImplemented"),
        (both, "GET", "/nowhere", 400, "BadRequest"),
    ]
    for signed_in, method, path, status, code in cases:
        headers = bearer(signed_in.access_token, "application/json")
        async with http.request(method, f"{sandbox.graph_url}{path}", headers=headers) as answer:
            assert (answer.status, (await graph_error(answer))["code"]) == (status, code), path
    async with http.get(f"{sandbox.graph_url}/me/messages") as answer:
        assert answer.status == 401  # no token: Graph's 401 before anything else
    async with http.get(f"{sandbox.graph_url}/me", headers=bearer(both.access_token)) as answer:
        assert answer.status == 200
        me = await answer.json()
    assert (me["mail"], me["userPrincipalName"]) == (BILLING, BILLING)


async def test_a_draft_can_be_deleted_once(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.ReadWrite"])
    headers = bearer(signed_in.access_token)
    async with http.post(
        f"{sandbox.graph_url}/me/messages", data=mime_body(invoice_mime()), headers=headers
    ) as response:
        draft_id = (await response.json())["id"]
    url = f"{sandbox.graph_url}/me/messages/{draft_id}"
    async with http.delete(url, headers=headers) as response:
        assert response.status == 204
    assert await stored_messages(http, sandbox) == []
    async with http.delete(url, headers=headers) as response:
        assert response.status == 404
        assert (await graph_error(response))["code"] == "ErrorItemNotFound"


# -- identity ---------------------------------------------------------------------------------


async def redeem(
    sandbox: Sandbox, http: aiohttp.ClientSession, authorized: str, redeemed: str | None
) -> dict[str, str]:
    """Authorize ``authorized`` scopes, redeem the code asking for ``redeemed`` (None: no
    ``scope`` parameter); the token answer."""
    _, answer, _ = await consent(
        http,
        f"{sandbox.authority_url()}/oauth2/v2.0/authorize?client_id={CLIENT_ID}"
        f"&response_type=code&redirect_uri={REDIRECT_URI}&scope={authorized}"
        f"&login_hint={BILLING}",
    )
    form = {
        "grant_type": "authorization_code",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "code": answer["code"],
        "redirect_uri": REDIRECT_URI,
    }
    if redeemed is not None:
        form["scope"] = redeemed
    return await token_request(sandbox, http, form)


async def token_request(
    sandbox: Sandbox, http: aiohttp.ClientSession, form: dict[str, str]
) -> dict[str, str]:
    async with http.post(f"{sandbox.authority_url()}/oauth2/v2.0/token", data=form) as response:
        assert response.status == 200, await response.text()
        return dict(await response.json())


async def refresh(
    sandbox: Sandbox, http: aiohttp.ClientSession, refresh_token: str, scope: str | None
) -> dict[str, str]:
    form = {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": refresh_token,
    }
    if scope is not None:
        form["scope"] = scope
    return await token_request(sandbox, http, form)


async def test_every_refresh_rotates_the_refresh_token(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    first = await redeem(sandbox, http, "offline_access Mail.Send Mail.ReadWrite", None)
    narrowed = await refresh(sandbox, http, first["refresh_token"], "Mail.Send")
    assert narrowed["scope"] == "Mail.Send"
    assert narrowed["refresh_token"] not in (None, first["refresh_token"])
    # The rotated token still carries the whole grant: without a scope, all of it comes back.
    again = await refresh(sandbox, http, narrowed["refresh_token"], None)
    assert set(again["scope"].split()) == {"offline_access", "Mail.Send", "Mail.ReadWrite"}
    assert again["refresh_token"] != narrowed["refresh_token"]
    old = await refresh(sandbox, http, first["refresh_token"], "Mail.ReadWrite")
    assert old["refresh_token"]  # the used one stays valid (docs/providers.md A4)


async def test_code_redemption_honours_the_requested_scope(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    tokens = await redeem(sandbox, http, "offline_access Mail.Send Mail.ReadWrite", "Mail.Send")
    assert tokens["scope"] == "Mail.Send"
    assert tokens["refresh_token"]  # offline_access was granted by the authorization
    async with http.post(
        f"{sandbox.graph_url}/me/messages",
        data=mime_body(invoice_mime()),
        headers=bearer(tokens["access_token"]),
    ) as answer:
        assert answer.status == 403  # Mail.ReadWrite was not asked for at redemption
    widened = await refresh(sandbox, http, tokens["refresh_token"], "Mail.ReadWrite")
    assert widened["scope"] == "Mail.ReadWrite"
    whole = await redeem(sandbox, http, "offline_access Mail.Send", None)
    assert whole["scope"] == "offline_access Mail.Send"
