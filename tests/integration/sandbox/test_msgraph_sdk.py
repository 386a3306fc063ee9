"""Microsoft's own Graph SDK (``msgraph-sdk``) against the sandbox: send, draft, send-draft and
the error answers, parsed by the SDK as it parses real Graph's.

The token comes from the sandbox's Entra the way a real client gets one (msal, the consent page,
the code redemption); the SDK reaches the sandbox through an httpx client that trusts the
sandbox's CA explicitly (not the environment's), with the SDK's default middleware (retries,
``/users/me-token-to-replace`` → ``/me``) and its base URL pointed at the sandbox's Graph.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import pytest
import requests
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_http.middleware.options import RetryHandlerOption, UrlReplaceHandlerOption
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.file_attachment import FileAttachment
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.message import Message
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.recipient import Recipient
from msgraph.generated.users.item.send_mail.send_mail_post_request_body import (
    SendMailPostRequestBody,
)
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory

from mailbox_worker.sandbox import Sandbox

from .microsoft_helpers import BILLING, PDF_BYTES, bearer, invoice_mime, mime_body, sign_in

# msgraph-sdk's generated code uses its own deprecated classes (GetQueryParameters, ...).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

HTML = "<html><body><p>Invoice 2024-001 &amp; terms</p><p>Total: <b>10&euro;</b></p></body></html>"


class SandboxToken(AccessTokenProvider):
    """Hands the SDK a token obtained from the sandbox (for the sandbox's host only)."""

    def __init__(self, token: str, host: str) -> None:
        self._token = token
        self._hosts = AllowedHostsValidator([host])

    async def get_authorization_token(
        self, uri: str, additional_authentication_context: dict[str, Any] | None = None
    ) -> str:
        return self._token if self._hosts.is_url_host_valid(uri) else ""

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return self._hosts


ClientFor = Callable[[list[str]], Awaitable[GraphServiceClient]]


@pytest.fixture
async def graph_client(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> AsyncIterator[ClientFor]:
    """Makes a GraphServiceClient signed in with the given scopes."""
    transports: list[httpx.AsyncHTTPTransport] = []

    async def make(scopes: list[str]) -> GraphServiceClient:
        signed_in = await sign_in(sandbox, http, requests_session, scopes)
        host = urlsplit(sandbox.base_url).hostname or ""
        verify = ssl.create_default_context(cafile=str(sandbox.ca_path))
        # The SDK's middleware wraps this transport and does not close it: the fixture does.
        transport = httpx.AsyncHTTPTransport(verify=verify)
        transports.append(transport)
        options = {
            UrlReplaceHandlerOption.get_key(): UrlReplaceHandlerOption(
                enabled=True, replacement_pairs={"/users/me-token-to-replace": "/me"}
            )
        }
        client = GraphClientFactory.create_with_default_middleware(
            client=httpx.AsyncClient(transport=transport, trust_env=False), options=options
        )
        provider = BaseBearerTokenAuthenticationProvider(SandboxToken(signed_in.access_token, host))
        adapter = GraphRequestAdapter(provider, client)
        adapter.base_url = sandbox.graph_url
        return GraphServiceClient(request_adapter=adapter)

    yield make
    for transport in transports:
        await transport.aclose()


def invoice(recipient: str = "ap@fabrikam.example", **fields: Any) -> Message:
    return Message(
        subject="Invoice 2024-001",
        body=ItemBody(content_type=BodyType.Html, content=HTML),
        to_recipients=[Recipient(email_address=EmailAddress(address=recipient, name="AP"))],
        **fields,
    )


async def delivered(sandbox: Sandbox, http: aiohttp.ClientSession, folder: str) -> list[Any]:
    query = {"mailbox": BILLING, "folder": folder}
    async with http.get(f"{sandbox.base_url}/_sandbox/messages", params=query) as response:
        return list((await response.json())["messages"])


async def test_send_mail_as_the_sdk_sends_it(
    sandbox: Sandbox, http: aiohttp.ClientSession, graph_client: ClientFor
) -> None:
    client = await graph_client(["Mail.Send"])
    await client.me.send_mail.post(
        SendMailPostRequestBody(message=invoice(), save_to_sent_items=False)
    )
    [sent] = await delivered(sandbox, http, "sent")
    assert (sent["subject"], sent["to"], sent["from"]) == (
        "Invoice 2024-001",
        ["ap@fabrikam.example"],
        BILLING,
    )


async def test_draft_with_html_and_an_attachment_then_send_it(
    sandbox: Sandbox, http: aiohttp.ClientSession, graph_client: ClientFor
) -> None:
    client = await graph_client(["Mail.Send", "Mail.ReadWrite"])
    attachment = FileAttachment(
        odata_type="#microsoft.graph.fileAttachment",
        name="invoice-2024-001.pdf",
        content_type="application/pdf",
        content_bytes=PDF_BYTES,
    )
    draft = await client.me.messages.post(invoice(attachments=[attachment]))
    assert draft is not None and draft.id
    assert draft.is_draft is True and draft.has_attachments is True
    assert draft.body is not None and draft.body.content_type == BodyType.Html
    assert draft.body_preview == "Invoice 2024-001 & terms Total: 10€"
    [kept] = await delivered(sandbox, http, "drafts")
    assert kept["id"] == draft.id

    await client.me.messages.by_message_id(draft.id).send.post()
    [sent] = await delivered(sandbox, http, "sent")
    assert sent["id"] == draft.id and await delivered(sandbox, http, "drafts") == []
    [stored] = sent["attachments"]
    assert stored["sha256"] == hashlib.sha256(PDF_BYTES).hexdigest()
    # Sending it again: the draft is gone, as in Exchange.
    with pytest.raises(ODataError) as raised:
        await client.me.messages.by_message_id(draft.id).send.post()
    assert (raised.value.response_status_code, code_of(raised.value)) == (404, "ErrorItemNotFound")


def code_of(error: ODataError) -> str | None:
    return error.error.code if error.error is not None else None


async def test_an_invalid_recipient_is_error_invalid_recipients(
    sandbox: Sandbox, http: aiohttp.ClientSession, graph_client: ClientFor
) -> None:
    client = await graph_client(["Mail.Send"])
    with pytest.raises(ODataError) as raised:
        await client.me.send_mail.post(SendMailPostRequestBody(message=invoice("billing dept")))
    assert raised.value.response_status_code == 400
    assert code_of(raised.value) == "ErrorInvalidRecipients"
    assert await delivered(sandbox, http, "sent") == []


async def test_missing_permissions_are_graphs_403s(
    sandbox: Sandbox, http: aiohttp.ClientSession, graph_client: ClientFor
) -> None:
    client = await graph_client(["Mail.Send"])
    with pytest.raises(ODataError) as raised:
        await client.me.messages.post(invoice())
    assert (raised.value.response_status_code, code_of(raised.value)) == (
        403,
        "ErrorAccessDenied",
    )
    with pytest.raises(ODataError) as raised:
        await client.me.get()
    assert (raised.value.response_status_code, code_of(raised.value)) == (
        403,
        "Authorization_RequestDenied",
    )
    with pytest.raises(ODataError) as raised:
        await client.me.messages.get()
    assert code_of(raised.value) == "ErrorAccessDenied"
    assert await delivered(sandbox, http, "drafts") == []


async def test_reads_it_does_not_simulate_say_so(graph_client: ClientFor) -> None:
    client = await graph_client(["Mail.ReadWrite", "User.Read"])
    me = await client.me.get()
    assert me is not None and (me.mail, me.user_principal_name) == (BILLING, BILLING)
    with pytest.raises(ODataError) as raised:
        await client.me.messages.get()
    assert (raised.value.response_status_code, code_of(raised.value)) == (501, "NotImplemented")


async def test_throttling_over_the_mailbox_concurrency(
    sandbox: Sandbox, http: aiohttp.ClientSession, graph_client: ClientFor
) -> None:
    """Four requests of the same app still arriving hold the mailbox's slots: the SDK, told not
    to retry, sees 429 ApplicationThrottled; with its own retries it waits Retry-After and
    gets through once they are done."""
    client = await graph_client(["Mail.Send"])
    [access_token] = list(sandbox.state.access_tokens)  # the SDK's: same app, same mailbox
    body = mime_body(invoice_mime())
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield body[:100]
        await release.wait()
        yield body[100:]

    async def slow_send() -> int:
        async with http.post(
            f"{sandbox.graph_url}/me/sendMail", data=slow_body(), headers=bearer(access_token)
        ) as answer:
            return answer.status

    slow = [asyncio.create_task(slow_send()) for _ in range(4)]
    async with asyncio.timeout(10):
        while sum(sandbox.state.in_flight.values()) < 4:
            await asyncio.sleep(0.01)
    no_retry = RequestConfiguration[Any](options=[RetryHandlerOption(max_retries=0)])
    with pytest.raises(ODataError) as raised:
        await client.me.send_mail.post(
            SendMailPostRequestBody(message=invoice()), request_configuration=no_retry
        )
    assert (raised.value.response_status_code, code_of(raised.value)) == (
        429,
        "ApplicationThrottled",
    )
    retried = asyncio.create_task(
        client.me.send_mail.post(SendMailPostRequestBody(message=invoice()))
    )
    async with asyncio.timeout(10):  # its first attempt is refused too, then it waits
        while sandbox.state.operation_counters["graph.throttled.mailbox_concurrency"] < 2:
            await asyncio.sleep(0.01)
    release.set()
    assert await asyncio.gather(*slow) == [202] * 4
    await retried
    assert len(await delivered(sandbox, http, "sent")) == 5


def test_the_sdk_sends_pascal_case_parameters() -> None:
    """What the sandbox must accept: the SDK names action parameters as Graph's metadata does."""
    from kiota_serialization_json.json_serialization_writer import JsonSerializationWriter

    writer = JsonSerializationWriter()
    writer.write_object_value(None, SendMailPostRequestBody(message=invoice()))
    written = writer.get_serialized_content().decode()
    assert '"Message"' in written and '"message"' not in written
