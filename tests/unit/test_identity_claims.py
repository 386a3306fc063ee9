"""Who signed in and with which address, read from id_token claims, for both providers."""

from __future__ import annotations

from typing import Any

import pytest

from mailbox_worker.policy.identities import AccountId, may_connect
from mailbox_worker.tokens import google, microsoft

TENANT = "72F988BF-86F1-41AF-91AB-2D7CD011DB47"
OBJECT_ID = "00000000-0000-0000-66f3-3332eca7ea81"


def test_a_microsoft_account_is_its_tenant_and_object_id_lower_cased() -> None:
    claims = {"tid": TENANT, "oid": OBJECT_ID, "sub": "pairwise-per-app", "email": "a@b.example"}
    assert microsoft.signed_in_account(claims) == AccountId(TENANT.lower(), OBJECT_ID)


@pytest.mark.parametrize(
    "claims",
    [
        {"oid": OBJECT_ID},
        {"tid": TENANT},
        {"tid": TENANT, "oid": ""},
        {"tid": TENANT, "oid": "billing@contoso.example"},
        {"tid": TENANT, "oid": 7},
        {"tid": "contoso.onmicrosoft.com", "oid": OBJECT_ID},
        {"tid": TENANT, "oid": OBJECT_ID + "\n"},
        {"tid": TENANT, "sub": OBJECT_ID},  # the pairwise sub is no substitute for oid
    ],
)
def test_a_microsoft_sign_in_without_both_guids_has_no_account(claims: dict[str, Any]) -> None:
    assert microsoft.signed_in_account(claims) is None


@pytest.mark.parametrize(
    ("claims", "address"),
    [
        ({"email": "billing@contoso.example", "preferred_username": "j@x.example"}, None),
        ({"preferred_username": "j.smith@contoso.onmicrosoft.com"}, None),
        ({}, ""),
        ({"email": ["a@b.example"]}, ""),
    ],
)
def test_the_microsoft_address_is_the_mail_claim_else_the_sign_in_name(
    claims: dict[str, Any], address: str | None
) -> None:
    expected = (
        address if address is not None else claims.get("email") or claims.get("preferred_username")
    )
    assert microsoft.signed_in_address(claims) == expected


def test_a_google_account_is_its_subject_alone() -> None:
    claims = {"iss": "accounts.google.com", "sub": "110169484474386276334", "email": "a@b.example"}
    assert google.signed_in_account(claims) == AccountId(None, "110169484474386276334")
    other_spelling = {**claims, "iss": "https://accounts.google.com"}
    assert google.signed_in_account(other_spelling) == google.signed_in_account(claims)


@pytest.mark.parametrize("subject", [None, "", 110169484474386276334, "a b", "x" * 256, "é"])
def test_a_google_sign_in_without_a_usable_subject_has_no_account(subject: object) -> None:
    assert google.signed_in_account({"sub": subject}) is None


@pytest.mark.parametrize(
    ("claims", "address"),
    [
        ({"email": "a@b.example", "email_verified": True}, "a@b.example"),
        ({"email": "a@b.example"}, "a@b.example"),
        ({"email": "a@b.example", "email_verified": False}, ""),
        ({"email": "a@b.example", "email_verified": "false"}, ""),
        ({}, ""),
    ],
)
def test_the_google_address_is_the_verified_email(claims: dict[str, Any], address: str) -> None:
    assert google.signed_in_address(claims) == address


def test_an_unpinned_mailbox_accepts_any_account_a_pinned_one_only_its_own() -> None:
    pinned = AccountId(TENANT.lower(), OBJECT_ID)
    assert may_connect(None, pinned)
    assert may_connect(pinned, AccountId(TENANT.lower(), OBJECT_ID))
    assert not may_connect(
        pinned, AccountId(TENANT.lower(), "11111111-1111-1111-1111-111111111111")
    )
    assert not may_connect(pinned, AccountId("22222222-2222-2222-2222-222222222222", OBJECT_ID))
    assert not may_connect(AccountId(None, "1"), AccountId(None, "2"))
