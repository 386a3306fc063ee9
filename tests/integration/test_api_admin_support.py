"""Support access on the admin page (docs/privacy.md PP-3, LU-5), over HTTP: an account admin
sees whether it is on, grants it for one of the page's durations and ends it, through the same
service calls and audit events as ``/v1/account/support-access``; the forms are CSRF-protected
like the page's others, and only a key with ``account:write`` of that account may use them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailbox_worker.api.admin_support import HOURS_CHOICES
from mailbox_worker.api.document import read_document

from .admin_harness import ALL_PERMISSIONS, Admin, running_admin

ADMIN_PERMISSIONS = ALL_PERMISSIONS | {"account:read", "account:write"}
REASON = "ticket 4711: invoices not arriving"


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    async with running_admin(tmp_path) as running:
        yield running


async def sign_in_as_account_admin(admin: Admin) -> str:
    issued = await admin.app.accounts.create_api_key(
        admin.account_id, "account admin", ADMIN_PERMISSIONS
    )
    return await admin.sign_in(issued.secret)


def section(page: str) -> str:
    start = page.index('<section aria-labelledby="support-title">')
    return page[start : page.index("</section>", start)]


async def audited(admin: Admin) -> list[str]:
    events = await admin.app.accounts.audit_events(admin.account_id)
    return [event.action for event in events if event.action.startswith("support.")]


async def test_the_section_explains_support_access_and_offers_to_grant_it(admin: Admin) -> None:
    cookie = await sign_in_as_account_admin(admin)

    shown = section((await admin.request("GET", "/admin", cookie=cookie)).text)

    assert "Support access is <strong>off</strong>." in shown
    assert "only counts, states and error" in shown and "ends by itself" in shown
    assert "audit trail" in shown
    assert 'action="/admin/support-access"' in shown
    options = [f'<option value="{hours}"' for hours in HOURS_CHOICES]
    assert all(option in shown for option in options)
    assert "/admin/support-access/delete" not in shown  # nothing to end yet


async def test_granting_redirects_shows_it_on_and_is_audited(admin: Admin) -> None:
    cookie = await sign_in_as_account_admin(admin)
    key_id = cookie.split(".")[0]

    answer = await admin.request(
        "POST",
        "/admin/support-access",
        cookie=cookie,
        form={"csrf_token": await admin.csrf(cookie), "hours": "24", "reason": REASON},
    )

    assert answer.status == 303
    assert answer.headers["Location"] == "/admin#support-access"
    grant = await admin.app.support_grants.active(admin.account_id)
    assert grant is not None and grant.reason == REASON and grant.granted_by == key_id
    assert grant.expires_at - grant.created_at == dt.timedelta(hours=24)
    shown = section((await admin.request("GET", "/admin", cookie=cookie)).text)
    assert "Support access is <strong>on</strong> until <time" in shown
    assert f"<code>{key_id}</code>" in shown and REASON in shown
    assert admin.key not in shown and "mwk_" not in shown
    assert 'action="/admin/support-access/delete"' in shown
    assert await audited(admin) == ["support.granted"]


async def test_revoking_ends_it_at_once_and_is_audited(admin: Admin) -> None:
    cookie = await sign_in_as_account_admin(admin)
    csrf = await admin.csrf(cookie)
    form = {"csrf_token": csrf, "hours": "1", "reason": REASON}
    await admin.request("POST", "/admin/support-access", cookie=cookie, form=form)

    answer = await admin.request(
        "POST", "/admin/support-access/delete", cookie=cookie, form={"csrf_token": csrf}
    )
    again = await admin.request(
        "POST", "/admin/support-access/delete", cookie=cookie, form={"csrf_token": csrf}
    )

    assert answer.status == 303 and answer.headers["Location"] == "/admin#support-access"
    assert again.status == 303  # idempotent: nothing more to end, nothing more audited
    assert await admin.app.support_grants.active(admin.account_id) is None
    shown = section((await admin.request("GET", "/admin", cookie=cookie)).text)
    assert "Support access is <strong>off</strong>." in shown
    assert await audited(admin) == ["support.granted", "support.revoked"]


async def test_a_form_without_the_right_csrf_token_or_origin_changes_nothing(
    admin: Admin,
) -> None:
    cookie = await sign_in_as_account_admin(admin)
    other = await sign_in_as_account_admin(admin)
    grant_form = {"hours": "24", "reason": REASON}
    attempts = [
        ("/admin/support-access", {**grant_form, "csrf_token": "0" * 64}, {}),
        ("/admin/support-access", {**grant_form, "csrf_token": await admin.csrf(other)}, {}),
        (
            "/admin/support-access",
            {**grant_form, "csrf_token": await admin.csrf(cookie)},
            {"Origin": "https://evil.example"},
        ),
    ]

    for path, form, headers in attempts:
        answer = await admin.request("POST", path, cookie=cookie, form=form, headers=headers)
        assert answer.status == 403, answer.text
        assert 'role="alert"' in answer.text
    assert await admin.app.support_grants.active(admin.account_id) is None

    await admin.request(
        "POST",
        "/admin/support-access",
        cookie=cookie,
        form={**grant_form, "csrf_token": await admin.csrf(cookie)},
    )
    refused = await admin.request(
        "POST", "/admin/support-access/delete", cookie=cookie, form={"csrf_token": "0" * 64}
    )
    assert refused.status == 403
    assert await admin.app.support_grants.active(admin.account_id) is not None
    assert await audited(admin) == ["support.granted"]


async def test_without_a_session_nothing_is_granted(admin: Admin) -> None:
    answer = await admin.request(
        "POST", "/admin/support-access", form={"csrf_token": "x", "hours": "24", "reason": REASON}
    )

    assert answer.status == 303 and answer.headers["Location"] == "/admin"
    assert await admin.app.support_grants.active(admin.account_id) is None


@pytest.mark.parametrize(
    "fields",
    [{"hours": "2", "reason": REASON}, {"hours": "24", "reason": " "}, {"hours": "24"}],
)
async def test_a_duration_off_the_list_or_no_reason_is_refused(
    admin: Admin, fields: dict[str, str]
) -> None:
    cookie = await sign_in_as_account_admin(admin)

    answer = await admin.request(
        "POST",
        "/admin/support-access",
        cookie=cookie,
        form={"csrf_token": await admin.csrf(cookie), **fields},
    )

    assert answer.status == 400
    assert "Say why support needs access" in answer.text
    assert await admin.app.support_grants.active(admin.account_id) is None


async def test_only_a_key_with_account_write_may_grant_or_revoke(admin: Admin) -> None:
    cookie = await admin.sign_in()  # mailboxes and jobs only: an everyday key
    reader = await admin.app.accounts.create_api_key(
        admin.account_id, "reader", ALL_PERMISSIONS | {"account:read"}
    )
    reader_cookie = await admin.sign_in(reader.secret)

    page = section((await admin.request("GET", "/admin", cookie=cookie)).text)
    read_only = section((await admin.request("GET", "/admin", cookie=reader_cookie)).text)
    answers = [
        await admin.request(
            "POST",
            "/admin/support-access",
            cookie=session,
            form={"csrf_token": await admin.csrf(session), "hours": "24", "reason": REASON},
        )
        for session in (cookie, reader_cookie)
    ]

    assert "account:read" in page and "Support access is" not in page
    assert "Support access is <strong>off</strong>." in read_only and "account:write" in read_only
    assert 'action="/admin/support-access"' not in page + read_only
    assert [answer.status for answer in answers] == [403, 403]
    assert all("account:write" in answer.text for answer in answers)
    assert await admin.app.support_grants.active(admin.account_id) is None
    assert await audited(admin) == []


async def test_a_grant_covers_only_the_signed_in_keys_account(admin: Admin) -> None:
    other = await admin.app.accounts.create_account("Fabrikam")
    issued = await admin.app.accounts.create_api_key(other.id, "their admin", ADMIN_PERMISSIONS)
    cookie = await admin.sign_in(issued.secret)

    await admin.request(
        "POST",
        "/admin/support-access",
        cookie=cookie,
        form={"csrf_token": await admin.csrf(cookie), "hours": "168", "reason": REASON},
    )

    assert await admin.app.support_grants.active(other.id) is not None
    assert await admin.app.support_grants.active(admin.account_id) is None


def test_every_duration_offered_is_within_the_apis_limit() -> None:
    schemas = json.loads(read_document())["components"]["schemas"]
    limit = schemas["SupportAccessRequest"]["properties"]["hours"]["maximum"]
    offered = schemas["AdminSupportAccessForm"]["properties"]["hours"]["enum"]

    assert sorted(int(hours) for hours in offered) == sorted(HOURS_CHOICES)
    assert all(1 <= hours <= limit for hours in HOURS_CHOICES)
