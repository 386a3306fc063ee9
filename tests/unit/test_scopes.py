from __future__ import annotations

import pytest

from mailbox_worker.policy.scopes import broader_scopes, missing_scopes, required_scopes

SEND = "https://graph.microsoft.com/Mail.Send"
READWRITE = "https://graph.microsoft.com/Mail.ReadWrite"


@pytest.mark.parametrize(
    ("capabilities", "expected"),
    [(["send"], (SEND,)), (["draft"], (SEND, READWRITE)), (["send", "draft"], (SEND, READWRITE))],
)
def test_scopes_are_exactly_what_the_capabilities_need(
    capabilities: list[str], expected: tuple[str, ...]
) -> None:
    assert required_scopes("microsoft", capabilities) == tuple(sorted(expected))


@pytest.mark.parametrize("capabilities", [[], ["read"], ["send", "delete"]])
def test_unknown_or_empty_capabilities_are_refused(capabilities: list[str]) -> None:
    with pytest.raises(ValueError, match="capabilities"):
        required_scopes("microsoft", capabilities)


def test_unknown_provider_is_refused() -> None:
    with pytest.raises(ValueError, match="provider"):
        required_scopes("yahoo", ["send"])


def test_granted_scopes_may_come_back_short_or_in_other_case() -> None:
    assert missing_scopes([SEND, READWRITE], ["mail.send", "Mail.ReadWrite", "openid"]) == ()
    assert missing_scopes([SEND, READWRITE], [SEND, "openid", "profile"]) == (READWRITE,)


@pytest.mark.parametrize(
    ("capabilities", "expected"),
    [
        (["send"], ("https://www.googleapis.com/auth/gmail.send",)),
        (
            ["send", "draft"],
            (
                "https://www.googleapis.com/auth/gmail.compose",
                "https://www.googleapis.com/auth/gmail.send",
            ),
        ),
    ],
)
def test_google_scopes_never_include_full_mail_access(
    capabilities: list[str], expected: tuple[str, ...]
) -> None:
    scopes = required_scopes("google", capabilities)
    assert scopes == expected
    assert "https://mail.google.com/" not in scopes


GMAIL_SEND = "https://www.googleapis.com/auth/gmail.send"
GMAIL_COMPOSE = "https://www.googleapis.com/auth/gmail.compose"


@pytest.mark.parametrize(
    ("capabilities", "expected"),
    [
        (["send"], (GMAIL_SEND,)),
        (["draft"], (GMAIL_COMPOSE, GMAIL_SEND)),
        (["send", "draft"], (GMAIL_COMPOSE, GMAIL_SEND)),
    ],
)
def test_gmail_compose_is_asked_only_for_drafts(
    capabilities: list[str], expected: tuple[str, ...]
) -> None:
    required = required_scopes("google", capabilities)
    assert required == expected
    assert broader_scopes(required) == ()


@pytest.mark.parametrize(
    "scope",
    [
        "https://mail.google.com/",
        "https://www.googleapis.com/auth/gmail.readonly",
        "https://www.googleapis.com/auth/gmail.modify",
        "https://www.googleapis.com/auth/gmail.metadata",
        "Mail.Read",
        "https://graph.microsoft.com/Mail.Read",
    ],
)
def test_a_read_scope_in_a_grant_is_named(scope: str) -> None:
    granted = (GMAIL_SEND, "openid", scope)
    assert broader_scopes(granted) == (scope,)
