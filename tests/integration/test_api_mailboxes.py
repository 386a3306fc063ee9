"""``/v1/mailboxes`` and ``/oauth/callback``.

With the real ``MailboxService`` (``mailbox_worker.mailboxes.service``) against a fake
Microsoft identity platform: create, consent, read, reconnect, disconnect. With a
``RecordingConnector``: what the API hands to the port and how it renders its answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from mailbox_worker.api.services import CallbackResult
from mailbox_worker.policy.scopes import GRAPH_MAIL_READWRITE, GRAPH_MAIL_SEND
from tests.integration.api_harness import (
    MAILBOX_ADDRESS,
    RecordingConnector,
    RunningApi,
    consent_code,
    job_request,
    running_api,
)

RETURN_URL = "https://invoicing.example/settings/mailbox?tab=email"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[RunningApi]:
    async with running_api(tmp_path) as running:
        yield running


@pytest.fixture
async def key(api: RunningApi) -> str:
    """A key of an account that declared ``RETURN_URL``'s origin."""
    account_id, key = await api.account_with_key()
    await api.accounts.set_return_origins(account_id, ["https://invoicing.example"], "test")
    return key


async def create(api: RunningApi, key: str, **fields: Any) -> dict[str, Any]:
    body = {"provider": "microsoft", "capabilities": ["send"], **fields}
    answer = await api.call("POST", "/v1/mailboxes", key=key, json_body=body)
    assert answer.status == 201, answer.body
    created: dict[str, Any] = answer.json()
    assert answer.headers["Location"] == f"/v1/mailboxes/{created['mailbox']['id']}"
    return created


async def consent(api: RunningApi, authorization_url: str, **query: str) -> Any:
    state, code = consent_code(authorization_url)
    params = {"code": code, "state": state, "session_state": "s", **query}
    return await api.call("GET", f"/oauth/callback?{urlencode(params)}")


# -- with the real mailbox service ------------------------------------------------------------


async def test_a_new_mailbox_waits_for_consent_and_asks_only_what_it_needs(
    api: RunningApi, key: str
) -> None:
    created = await create(api, key, capabilities=["send"], return_url=RETURN_URL)

    mailbox = created["mailbox"]
    assert (mailbox["provider"], mailbox["state"], mailbox["address"]) == (
        "microsoft",
        "pending_consent",
        None,
    )
    assert mailbox["capabilities"] == ["send"]
    assert mailbox["granted_scopes"] == []
    assert created["authorization_url"].startswith("https://login.identity.test/authorize?")


async def test_consent_connects_the_mailbox_and_returns_to_the_app(
    api: RunningApi, key: str
) -> None:
    created = await create(api, key, capabilities=["send", "draft"], return_url=RETURN_URL)
    mailbox_id = created["mailbox"]["id"]

    answer = await consent(api, created["authorization_url"])

    assert answer.status == 303
    location = urlsplit(answer.headers["Location"])
    assert location._replace(query="").geturl() == RETURN_URL.partition("?")[0]
    assert parse_qs(location.query) == {
        "tab": ["email"],
        "mailbox_id": [mailbox_id],
        "outcome": ["connected"],
    }
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    mailbox = (await api.call("GET", f"/v1/mailboxes/{mailbox_id}", key=key)).json()
    assert (mailbox["state"], mailbox["address"]) == ("connected", MAILBOX_ADDRESS)
    assert sorted(mailbox["granted_scopes"]) == [GRAPH_MAIL_READWRITE, GRAPH_MAIL_SEND]
    job = await api.call("POST", "/v1/jobs", key=key, json_body=job_request(mailbox_id))
    assert job.status == 202, job.body


async def test_a_used_authorization_cannot_be_replayed(api: RunningApi, key: str) -> None:
    created = await create(api, key, return_url=RETURN_URL)
    assert (await consent(api, created["authorization_url"])).status == 303

    replay = await consent(api, created["authorization_url"])

    assert replay.status == 400
    assert replay.headers["Content-Type"].startswith("text/html")
    assert "state_invalid" in replay.body.decode()
    assert replay.headers["Cache-Control"] == "no-store"


async def test_a_refused_consent_returns_its_outcome(api: RunningApi, key: str) -> None:
    created = await create(api, key, return_url=RETURN_URL)

    answer = await consent(api, created["authorization_url"], error="access_denied", code="")

    assert answer.status == 303
    assert parse_qs(urlsplit(answer.headers["Location"]).query)["outcome"] == ["access_denied"]
    mailbox_id = created["mailbox"]["id"]
    mailbox = (await api.call("GET", f"/v1/mailboxes/{mailbox_id}", key=key)).json()
    assert (mailbox["state"], mailbox["state_reason"]) == ("pending_consent", "access_denied")


async def test_admin_approval_required_shows_the_admin_consent_link(
    api: RunningApi, key: str
) -> None:
    created = await create(api, key)
    description = "AADSTS90094: <b>Contoso</b> needs permission… Trace ID: t"

    answer = await consent(
        api, created["authorization_url"], error="access_denied", error_description=description
    )

    assert answer.status == 400
    page = answer.body.decode()
    assert "admin_consent_required" in page
    assert "administrator" in page
    assert "/v2.0/adminconsent?client_id=test-client&amp;scope=openid%20profile" in page
    assert "AADSTS" not in page and "Contoso" not in page


async def test_an_administrator_back_from_the_admin_consent_link_is_told_what_next(
    api: RunningApi,
) -> None:
    answer = await api.call("GET", "/oauth/callback?admin_consent=True&tenant=forged")

    page = answer.body.decode()
    assert "admin_consent_answered" in page
    assert "forged" not in page


async def test_mailboxes_are_listed_and_read_per_account(api: RunningApi, key: str) -> None:
    mine = [(await create(api, key))["mailbox"]["id"] for _ in range(2)]
    _, other_key = await api.account_with_key(name="Northwind")
    theirs = (await create(api, other_key))["mailbox"]["id"]

    listed = await api.call("GET", "/v1/mailboxes", key=key)
    foreign = await api.call("GET", f"/v1/mailboxes/{theirs}", key=key)
    unknown = await api.call("GET", "/v1/mailboxes/mbx_unknown", key=key)

    assert [m["id"] for m in listed.json()["mailboxes"]] == mine
    assert (foreign.status, foreign.error_code) == (404, "mailbox_not_found")
    assert foreign.body_but_request_id == unknown.body_but_request_id


async def test_a_mailbox_can_be_reconnected_with_or_without_a_body(
    api: RunningApi, key: str
) -> None:
    created = await create(api, key)
    path = f"/v1/mailboxes/{created['mailbox']['id']}/connect"

    bare = await api.call("POST", path, key=key)
    with_url = await api.call("POST", path, key=key, json_body={"return_url": RETURN_URL})

    assert (bare.status, with_url.status) == (200, 200)
    urls = {created["authorization_url"], bare.json()["authorization_url"]}
    assert len(urls | {with_url.json()["authorization_url"]}) == 3  # a new state each time
    assert (await consent(api, with_url.json()["authorization_url"])).status == 303


async def test_disconnect_is_immediate_idempotent_and_final(api: RunningApi, key: str) -> None:
    created = await create(api, key, return_url=RETURN_URL)
    mailbox_id = created["mailbox"]["id"]
    await consent(api, created["authorization_url"])
    queued = await api.call("POST", "/v1/jobs", key=key, json_body=job_request(mailbox_id))

    first = await api.call("DELETE", f"/v1/mailboxes/{mailbox_id}", key=key)
    again = await api.call("DELETE", f"/v1/mailboxes/{mailbox_id}", key=key)

    assert (first.status, first.json()["state"]) == (200, "disconnected")
    assert (again.status, again.json()["state"]) == (200, "disconnected")
    job = await api.call("GET", f"/v1/jobs/{queued.json()['id']}", key=key)
    assert job.json()["state"] == "cancelled"
    refused = await api.call("POST", "/v1/jobs", key=key, json_body=job_request(mailbox_id))
    assert (refused.status, refused.error_code) == (409, "mailbox_disconnected")
    reconnect = await api.call("POST", f"/v1/mailboxes/{mailbox_id}/connect", key=key)
    assert (reconnect.status, reconnect.error_code) == (409, "mailbox_disconnected")


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"provider": "yahoo", "capabilities": ["send"]}, "provider", "invalid_request"),
        ({"provider": "microsoft", "capabilities": []}, "capabilities", "invalid_request"),
        ({"provider": "microsoft", "capabilities": ["read"]}, "capabilities[0]", "invalid_request"),
        (
            {"provider": "microsoft", "capabilities": ["send", "send"]},
            "capabilities",
            "invalid_request",
        ),
        ({"capabilities": ["send"]}, "provider", "invalid_request"),
        (
            {
                "provider": "microsoft",
                "capabilities": ["send"],
                "return_url": "javascript:alert(1)",
            },
            "return_url",
            "invalid_request",
        ),
        (
            {"provider": "microsoft", "capabilities": ["send"], "return_url": "https://"},
            "return_url",
            "invalid_request",
        ),
        (
            {"provider": "microsoft", "capabilities": ["send"], "login_hint": "admin"},
            "login_hint",
            "invalid_address",
        ),
        (
            {"provider": "microsoft", "capabilities": ["send"], "scopes": ["Mail.Read"]},
            "scopes",
            "invalid_request",
        ),
    ],
    ids=[
        "provider",
        "no capability",
        "unknown capability",
        "repeated capability",
        "no provider",
        "javascript url",
        "url without host",
        "login hint",
        "extra scopes",
    ],
)
async def test_a_malformed_mailbox_request_is_refused_naming_the_field(
    api: RunningApi, key: str, body: dict[str, Any], field: str, code: str
) -> None:
    answer = await api.call("POST", "/v1/mailboxes", key=key, json_body=body)
    assert (answer.status, answer.error_code) == (400, code), answer.body
    assert field in [detail["field"] for detail in answer.json()["error"]["details"]]
    listed = (await api.call("GET", "/v1/mailboxes", key=key)).json()
    assert listed == {"mailboxes": [], "next_cursor": None}


# -- what the API hands to the port, and how it renders the answers ----------------------------


@pytest.fixture
async def recorded(tmp_path: Path) -> AsyncIterator[tuple[RunningApi, RecordingConnector]]:
    connector = RecordingConnector()
    async with running_api(tmp_path, connector=lambda _: connector) as running:
        yield running, connector


async def test_the_request_reaches_the_connector_as_sent(
    recorded: tuple[RunningApi, RecordingConnector],
) -> None:
    api, connector = recorded
    _, key = await api.account_with_key()
    body = {
        "provider": "microsoft",
        "capabilities": ["send", "draft"],
        "return_url": RETURN_URL,
        "login_hint": MAILBOX_ADDRESS,
    }
    created = await api.call("POST", "/v1/mailboxes", key=key, json_body=body)
    mailbox_id = created.json()["mailbox"]["id"]
    await api.call("POST", f"/v1/mailboxes/{mailbox_id}/connect", key=key, json_body={})
    await api.call("GET", "/oauth/callback?code=c&state=s&client_info=x")

    assert connector.calls == [
        ("create", ("microsoft", ["send", "draft"], RETURN_URL, MAILBOX_ADDRESS)),
        ("reconnect", (mailbox_id, None)),
        ("complete", ({"code": "c", "state": "s", "client_info": "x"},)),
    ]


async def test_the_callback_page_escapes_the_outcome(
    recorded: tuple[RunningApi, RecordingConnector],
) -> None:
    api, connector = recorded
    connector.callback = CallbackResult(
        "scope_missing", "The consent did not grant <script>alert(1)</script>.", None, "mbx_1"
    )

    answer = await api.call("GET", "/oauth/callback?code=c&state=s")

    page = answer.body.decode()
    assert answer.status == 400
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert answer.headers["Content-Security-Policy"] == "default-src 'none'"


async def test_a_connected_outcome_without_return_url_is_a_200_page(
    recorded: tuple[RunningApi, RecordingConnector],
) -> None:
    api, _ = recorded
    answer = await api.call("GET", "/oauth/callback?code=c&state=s")
    assert answer.status == 200
    assert "The mailbox is connected." in answer.body.decode()


async def test_google_without_a_configured_app_is_a_clear_conflict(
    api: RunningApi, key: str
) -> None:
    answer = await api.call(
        "POST", "/v1/mailboxes", key=key, json_body={"provider": "google", "capabilities": ["send"]}
    )
    assert answer.status == 409
    assert answer.json()["error"]["code"] == "provider_not_configured"
