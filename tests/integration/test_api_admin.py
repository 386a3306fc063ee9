"""The admin page over HTTP (no browser): sessions, CSRF, escaping, connect and disconnect.

The daemon's real application serves the API on a real socket (``admin_harness``); Microsoft
is the sandbox, so the authorization URLs are the ones msal builds. Support access on the page
is ``test_api_admin_support``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from mailbox_worker.api.admin_session import COOKIE_NAME
from mailbox_worker.jobs.store import NewJob

from .admin_harness import ADDRESS, Admin, field_value, running_admin, session_cookie

LIMITED_USE = (
    "mailbox-worker's use and transfer of information received from Google APIs adheres to the "
    "Google API Services User Data Policy, including the Limited Use requirements."
)
GRAPH = "https://graph.microsoft.com/"
POLICY_LINK = "https://developers.google.com/terms/api-services-user-data-policy"


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    async with running_admin(tmp_path) as running:
        yield running


# -- signing in and out -----------------------------------------------------------------------


async def test_the_sign_in_form_is_shown_with_the_limited_use_disclosure(admin: Admin) -> None:
    page = await admin.request("GET", "/admin")

    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert 'action="/admin/session"' in page.text and 'name="api_key"' in page.text
    assert LIMITED_USE in re.sub(r"<[^>]+>", "", page.text)
    assert page.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


async def test_a_cross_site_arrival_is_bounced_so_the_strict_cookie_is_sent(
    admin: Admin,
) -> None:
    cookie = await admin.sign_in()
    back = "/admin?mailbox_id=mbx_1&outcome=connected"

    bounced = await admin.request(
        "GET", back, cookie=cookie, headers={"Sec-Fetch-Site": "cross-site"}
    )
    shown = await admin.request(
        "GET", back, cookie=cookie, headers={"Sec-Fetch-Site": "same-origin"}
    )

    assert bounced.status == 200
    assert (
        '<meta http-equiv="refresh" content="0; url=/admin?mailbox_id=mbx_1&amp;outcome=connected">'
        in bounced.text
    )
    assert 'id="sign-out"' not in bounced.text
    assert 'id="sign-out"' in shown.text and "The mailbox is connected." in shown.text


async def test_a_good_key_opens_a_session_with_a_strict_cookie_that_holds_no_key(
    admin: Admin,
) -> None:
    answer = await admin.request("POST", "/admin/session", form={"api_key": admin.key})

    assert answer.status == 303 and answer.headers["Location"] == "/admin"
    morsel = session_cookie(answer)[COOKIE_NAME]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Strict"
    assert morsel["path"] == "/admin"
    assert not morsel["secure"]  # the public URL is http here; https sets Secure
    assert int(morsel["max-age"]) == 8 * 3600
    key_id, expiry, signature = morsel.value.split(".")
    assert admin.key.startswith(f"mwk_{key_id}_")
    assert expiry.isdigit() and len(signature) == 64
    assert admin.key.split("_", 2)[2] not in morsel.value
    page = await admin.request("GET", "/admin", cookie=morsel.value)
    assert page.status == 200 and 'id="sign-out"' in page.text and key_id in page.text


async def test_a_bad_key_is_refused_and_no_cookie_is_set(admin: Admin) -> None:
    for key in ("mwk_nope_nope", "not a key", admin.key + "x"):
        answer = await admin.request("POST", "/admin/session", form={"api_key": key})
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert "not valid" in answer.text and 'name="api_key"' in answer.text
        assert not answer.set_cookie


async def test_a_revoked_key_cannot_sign_in_and_revoking_ends_open_sessions(
    admin: Admin,
) -> None:
    cookie = await admin.sign_in()
    key_id = cookie.split(".")[0]
    assert await admin.app.accounts.revoke_api_key(key_id)

    page = await admin.request("GET", "/admin", cookie=cookie)
    assert 'name="api_key"' in page.text and 'id="sign-out"' not in page.text
    answer = await admin.request("POST", "/admin/session", form={"api_key": admin.key})
    assert answer.status == 401 and not answer.set_cookie


async def test_a_key_without_mailbox_permissions_is_refused(admin: Admin) -> None:
    issued = await admin.app.accounts.create_api_key(
        admin.account_id, "jobs only", frozenset({"jobs:write"})
    )
    answer = await admin.request("POST", "/admin/session", form={"api_key": issued.secret})
    assert answer.status == 403 and "mailboxes:write" in answer.text
    assert not answer.set_cookie


async def test_a_tampered_cookie_is_no_session(admin: Admin) -> None:
    key_id, expiry, signature = (await admin.sign_in()).split(".")
    for forged in (f"{key_id}.{int(expiry) + 3600}.{signature}", f"{key_id}.{expiry}.{'0' * 64}"):
        page = await admin.request("GET", "/admin", cookie=forged)
        assert 'name="api_key"' in page.text and 'id="sign-out"' not in page.text


async def test_signing_out_clears_the_cookie_and_ends_the_session(admin: Admin) -> None:
    cookie = await admin.sign_in()
    answer = await admin.request(
        "POST",
        "/admin/session/delete",
        cookie=cookie,
        form={"csrf_token": await admin.csrf(cookie)},
    )
    assert answer.status == 303 and answer.headers["Location"] == "/admin"
    cleared = session_cookie(answer)[COOKIE_NAME]
    assert cleared.value == "" and cleared["max-age"] == "0" and cleared["path"] == "/admin"
    page = await admin.request("GET", "/admin", cookie=cookie)  # the old cookie, replayed
    assert 'name="api_key"' in page.text and 'id="sign-out"' not in page.text


# -- CSRF ---------------------------------------------------------------------------------------


async def test_a_post_without_the_right_csrf_token_changes_nothing(admin: Admin) -> None:
    cookie = await admin.sign_in()
    other = await admin.sign_in()  # another session's token is not this one's
    attempts: list[tuple[dict[str, Any] | list[tuple[str, str]], Mapping[str, str], int]] = [
        ([("csrf_token", "0" * 64), ("provider", "microsoft"), ("capabilities", "send")], {}, 403),
        ({"provider": "microsoft", "capabilities": "send"}, {}, 400),
        (
            [
                ("csrf_token", await admin.csrf(cookie)),
                ("provider", "microsoft"),
                ("capabilities", "send"),
            ],
            {"Origin": "https://evil.example"},
            403,
        ),
    ]
    del other
    for form, headers, status in attempts:
        answer = await admin.request(
            "POST", "/admin/mailboxes", cookie=cookie, form=form, headers=headers
        )
        assert answer.status == status, answer.text
        assert 'role="alert"' in answer.text
    assert await admin.app.mailboxes.list(admin.account_id) == []


async def test_a_post_without_a_session_goes_back_to_sign_in(admin: Admin) -> None:
    answer = await admin.request(
        "POST",
        "/admin/mailboxes",
        form={"csrf_token": "x", "provider": "microsoft", "capabilities": "send"},
    )
    assert answer.status == 303 and answer.headers["Location"] == "/admin"
    assert await admin.app.mailboxes.list(admin.account_id) == []


# -- the mailboxes ------------------------------------------------------------------------------


async def test_the_list_escapes_what_it_shows(admin: Admin) -> None:
    mailbox = await admin.app.mailboxes.create(admin.account_id, "microsoft", ["send"], actor="t")
    hostile = '"><script>alert(1)</script>@contoso.example'
    await admin.app.mailboxes.mark_connected(mailbox.id, hostile, [GRAPH + "Mail.Send"])

    page = await admin.request("GET", "/admin", cookie=await admin.sign_in())

    assert "<script>" not in page.text
    assert "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;@contoso.example" in page.text
    assert f'id="mailbox-{mailbox.id}"' in page.text


async def test_connect_asks_the_minimal_scopes_and_comes_back_connected(admin: Admin) -> None:
    cookie = await admin.sign_in()
    scopes_by_capabilities = {
        ("send",): {GRAPH + "Mail.Send"},
        ("draft", "send"): {GRAPH + "Mail.Send", GRAPH + "Mail.ReadWrite"},
    }
    for capabilities, api_scopes in scopes_by_capabilities.items():
        form = [("csrf_token", await admin.csrf(cookie)), ("provider", "microsoft")]
        form += [("capabilities", capability) for capability in capabilities]
        answer = await admin.request("POST", "/admin/mailboxes", cookie=cookie, form=form)
        assert answer.status == 303, answer.text
        location = answer.headers["Location"]
        assert location.startswith(admin.sandbox.base_url)
        requested = set(parse_qs(urlsplit(location).query)["scope"][0].split())
        assert requested - {"openid", "profile", "offline_access", "email"} == api_scopes

    back = await admin.consent(location)
    assert back.startswith(f"{admin.base_url}/admin?")
    assert parse_qs(urlsplit(back).query)["outcome"] == ["connected"]
    page = await admin.request("GET", back.removeprefix(admin.base_url), cookie=cookie)
    assert "The mailbox is connected." in page.text
    assert 'data-state="connected"' in page.text


async def test_a_cancelled_consent_is_shown_and_can_be_reconnected(admin: Admin) -> None:
    cookie = await admin.sign_in()
    form = [
        ("csrf_token", await admin.csrf(cookie)),
        ("provider", "microsoft"),
        ("capabilities", "send"),
    ]
    answer = await admin.request("POST", "/admin/mailboxes", cookie=cookie, form=form)
    back = await admin.consent(answer.headers["Location"], action="cancel")

    page = await admin.request("GET", back.removeprefix(admin.base_url), cookie=cookie)
    assert "The consent was cancelled or refused" in page.text
    assert '<code class="outcome">access_denied</code>' in page.text
    [mailbox] = await admin.app.mailboxes.list(admin.account_id)
    assert mailbox.state == "pending_consent"
    again = await admin.request(
        "POST",
        f"/admin/mailboxes/{mailbox.id}/connect",
        cookie=cookie,
        form={"csrf_token": field_value(page.text, "csrf_token")},
    )
    assert again.status == 303 and again.headers["Location"].startswith(admin.sandbox.base_url)


async def test_disconnect_goes_back_to_the_page_showing_it_disconnected(admin: Admin) -> None:
    mailbox = await admin.app.mailboxes.create(admin.account_id, "microsoft", ["send"], actor="t")
    await admin.app.mailboxes.mark_connected(mailbox.id, ADDRESS, [GRAPH + "Mail.Send"])
    cookie = await admin.sign_in()

    answer = await admin.request(
        "POST",
        f"/admin/mailboxes/{mailbox.id}/disconnect",
        cookie=cookie,
        form={"csrf_token": await admin.csrf(cookie)},
    )

    assert answer.status == 303 and answer.headers["Location"] == "/admin"
    page = await admin.request("GET", "/admin", cookie=cookie)
    assert 'data-state="disconnected"' in page.text
    assert "Yes, disconnect" not in page.text  # nothing left to do with it
    found = await admin.app.mailboxes.get(mailbox.id)
    assert found is not None and found.state == "disconnected"


async def test_a_service_error_is_a_message_on_the_page(admin: Admin) -> None:
    cookie = await admin.sign_in()
    answer = await admin.request(
        "POST",
        "/admin/mailboxes/mbx_unknown/disconnect",
        cookie=cookie,
        form={"csrf_token": await admin.csrf(cookie)},
    )
    assert answer.status == 404
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "no such mailbox in this account" in answer.text
    assert "Traceback" not in answer.text and 'id="mailboxes"' not in answer.text


# -- what the page shows and loads --------------------------------------------------------------


def card(page: str, mailbox_id: str) -> str:
    """The HTML of one mailbox's card."""
    start = page.index(f'<li class="mailbox" id="mailbox-{mailbox_id}"')
    return page[start : page.index("</li>", start)]


async def test_a_card_shows_state_reason_scopes_held_jobs_pause_and_its_buttons(
    admin: Admin,
) -> None:
    app = admin.app
    mailbox = await app.mailboxes.create(admin.account_id, "microsoft", ["send", "draft"], "t")
    scopes = [GRAPH + "Mail.Send", GRAPH + "Mail.ReadWrite", "openid", "offline_access"]
    await app.mailboxes.mark_connected(mailbox.id, ADDRESS, scopes)
    connected = await app.mailboxes.get(mailbox.id)
    assert connected is not None
    assert await app.mailboxes.require_consent_again(connected, "invalid_grant", "t")
    until = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert await app.mailboxes.pause(mailbox.id, until, "rate")
    for n in range(3):
        await app.jobs.enqueue(
            NewJob(admin.account_id, mailbox.id, "send", {"n": n}, "0" * 64, "contoso.example")
        )
    for n in range(2):
        await app.jobs.enqueue(
            NewJob(
                admin.account_id,
                mailbox.id,
                "send",
                {"n": n},
                "1" * 64,
                "contoso.example",
                held=True,
            )
        )
    pending = await app.mailboxes.create(admin.account_id, "microsoft", ["send"], actor="t")

    page = (await admin.request("GET", "/admin", cookie=await admin.sign_in())).text

    shown = card(page, mailbox.id)
    assert 'data-state="reauth_required"' in shown
    assert '<span class="badge state state-reauth_required">Needs reconnecting</span>' in shown
    assert "no longer accepts this mailbox" in shown and "<code>(invalid_grant)</code>" in shown
    assert '<h3 id="mailbox-' + mailbox.id + '-address" class="address">' + ADDRESS in shown
    assert "Microsoft 365" in shown
    assert f'title="{GRAPH}Mail.ReadWrite">Mail.ReadWrite</span>' in shown
    assert ">openid<" not in shown and ">offline_access<" not in shown  # identity, not powers
    assert '<dd class="held-jobs"><span class="held-some">2</span></dd>' in shown  # held only
    assert 'class="paused-until"><time datetime="' in shown
    assert '<button type="submit" class="reconnect">Reconnect</button>' in shown
    # Disconnecting is a second step: the button that posts is inside a closed <details>.
    step = shown[shown.index('<details class="disconnect-step">') :]
    assert step.index("<summary") < step.index("/disconnect") < step.index("</details>")
    assert "Yes, disconnect this mailbox" in step and "(2 held)" in step and "Entra" in step

    other = card(page, pending.id)
    assert '<span class="badge state state-pending_consent">Waiting for consent</span>' in other
    assert "Address not known yet" in other and "none yet" in other
    assert '<button type="submit" class="reconnect">Connect</button>' in other
    assert "paused-until" not in other
    assert '<dd class="held-jobs"><span class="held-none">0</span></dd>' in other


async def test_the_page_loads_nothing_and_applies_only_its_own_stylesheet(admin: Admin) -> None:
    for cookie in (None, await admin.sign_in()):
        page = await admin.request("GET", "/admin", cookie=cookie)

        policy = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "unsafe-inline" not in policy
        [stylesheet] = re.findall(r"<style>(.*?)</style>", page.text, re.DOTALL)
        digest = base64.b64encode(hashlib.sha256(stylesheet.encode()).digest()).decode()
        assert f"style-src 'sha256-{digest}';" in policy
        assert "@import" not in stylesheet and "url(" not in stylesheet
        for loader in ("<script", "<link", "<img", "<iframe", " style=", " src="):
            assert loader not in page.text
        # The only other origin named is the Limited Use policy, a link to follow (LU-8).
        assert re.findall(r"https?://[^\s\"'<>)]+", page.text) == [POLICY_LINK]
