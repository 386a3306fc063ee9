"""Reading Entra's "an administrator must approve this app" and building the approval link
(docs/providers.md A8)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from mailbox_worker.policy.consent import aadsts_code, needs_admin_approval
from mailbox_worker.tokens.google import GoogleIdentity, GoogleSettings
from mailbox_worker.tokens.microsoft import admin_consent_url

SEND = "https://graph.microsoft.com/Mail.Send"
CALLBACK = "https://mail.example/oauth/callback"


@pytest.mark.parametrize(
    "description",
    [
        "AADSTS90094: Invoices needs permission to access resources in your organization that "
        "only an admin can grant.\r\nTrace ID: 1\r\nCorrelation ID: 2\r\nTimestamp: 3",
        "AADSTS90093: An administrator of Contoso has set a policy that prevents you ...",
        "AADSTS900941: Administrator consent is required. App is considered risky.",
        "AADSTS90095: anything",
    ],
)
def test_admin_approval_codes_are_recognised(description: str) -> None:
    assert needs_admin_approval(description)


@pytest.mark.parametrize(
    "description",
    [
        None,
        "",
        "AADSTS65004: User declined to consent to access the app.",
        "AADSTS900940: not one of ours",
        "The user needs AADSTS90094 approval",  # only a leading code counts
        "AADSTS9009: short",
    ],
)
def test_other_descriptions_are_not_admin_approval(description: str | None) -> None:
    assert not needs_admin_approval(description)


def test_only_the_number_is_read() -> None:
    assert aadsts_code("AADSTS90094: <script>") == 90094
    assert aadsts_code("no code here") is None


@pytest.mark.parametrize(
    ("authority", "tenant"),
    [
        ("https://login.microsoftonline.com/organizations", "organizations"),
        ("https://login.microsoftonline.com/common", "organizations"),
        ("https://login.microsoftonline.com/contoso.onmicrosoft.com/", "contoso.onmicrosoft.com"),
        ("https://sandbox.test:8443/contoso", "contoso"),
    ],
)
def test_the_admin_consent_link_is_the_v2_endpoint_of_the_authority(
    authority: str, tenant: str
) -> None:
    url = admin_consent_url(authority, "client-1", [SEND], CALLBACK)
    parts = urlsplit(url)
    origin = urlsplit(authority)
    assert (parts.scheme, parts.netloc) == (origin.scheme, origin.netloc)
    assert parts.path == f"/{tenant}/v2.0/adminconsent"
    query = parse_qs(parts.query)
    assert query == {
        "client_id": ["client-1"],
        "scope": [f"openid profile offline_access email {SEND}"],
        "redirect_uri": [CALLBACK],
    }
    assert "+" not in parts.query  # spaces as %20: the scope list survives any decoder


def test_google_offers_drafts_unless_turned_off() -> None:
    on = GoogleIdentity(GoogleSettings())
    off = GoogleIdentity(GoogleSettings(drafts=False))
    try:
        assert on.capabilities == {"send", "draft"}
        assert off.capabilities == {"send"}
        assert off.admin_consent_url([], CALLBACK) is None
    finally:
        on.close()
        off.close()
