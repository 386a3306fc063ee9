"""The egress allow-list: which destinations a request may go to (docs/privacy.md PP-5)."""

from __future__ import annotations

import pytest

from mailbox_worker.policy.egress import EgressPolicy, described, origin

POLICY = EgressPolicy.for_endpoints(
    [
        "https://login.microsoftonline.com/organizations",
        "https://graph.microsoft.com/v1.0",
        "https://oauth2.googleapis.com/token?ignored=1",
        "http://127.0.0.1:8443/events",
    ]
)


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("HTTPS://Graph.Microsoft.COM/v1.0/me", "https://graph.microsoft.com"),
        ("https://graph.microsoft.com:443/v1.0", "https://graph.microsoft.com"),
        ("https://graph.microsoft.com:8443/", "https://graph.microsoft.com:8443"),
        ("https://user:secret@graph.microsoft.com/", "https://graph.microsoft.com"),
        ("https://Bücher.example/x", "https://xn--bcher-kva.example"),
        ("https://straße.de/x", "https://xn--strae-oqa.de"),  # where aiohttp connects
        ("http://localhost:80/x", "http://localhost"),
        ("http://[::1]:3000/x", "http://[::1]:3000"),
    ],
)
def test_origins_are_normalised(url: str, normalised: str) -> None:
    assert origin(url) == normalised


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://graph.microsoft.com/v1.0", "must use https"),
        ("ftp://graph.microsoft.com/", "must be an https URL"),
        ("graph.microsoft.com/v1.0", "must be an https URL"),
        ("https:///path", "has no host"),
        ("https://graph.microsoft.com:99999/", "valid host and port"),
    ],
)
def test_what_is_no_allowable_origin_is_refused(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        origin(url)
    with pytest.raises(ValueError, match=reason):
        EgressPolicy.for_endpoints([url])


@pytest.mark.parametrize(
    "url",
    [
        "https://graph.microsoft.com/v1.0/me/sendMail",
        "https://GRAPH.microsoft.com:443/v1.0/me/messages?$top=1",
        "https://login.microsoftonline.com/contoso/v2.0/.well-known/openid-configuration",
        "https://oauth2.googleapis.com/revoke",
        "http://127.0.0.1:8443/anything",
    ],
)
def test_listed_origins_are_allowed_whatever_the_path(url: str) -> None:
    assert POLICY.allows(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://login.microsoftonline.com.attacker.example/organizations",
        "https://graph.microsoft.com:8443/v1.0",
        "http://graph.microsoft.com/v1.0",
        "https://gmail.googleapis.com/gmail/v1/users/me/messages/send",
        "http://127.0.0.1:8444/events",
        "https://127.0.0.1:8443/events",
        "http://localhost:8443/events",
        "https://evil.example/?next=https://graph.microsoft.com",
        "not a url",
        "",
    ],
)
def test_anything_else_is_refused(url: str) -> None:
    assert not POLICY.allows(url)


def test_an_empty_policy_allows_nothing() -> None:
    assert not EgressPolicy.for_endpoints([]).allows("https://graph.microsoft.com/")


def test_a_destination_is_described_by_its_origin_only() -> None:
    url = "https://Outlook.Office.com/api/v2.0/Users('a@b.example')/x?authtoken=secret"
    assert described(url) == "https://outlook.office.com"
    assert "secret" not in described("gopher://x?authtoken=secret")
