"""What a Microsoft code redemption granted, read from the token endpoint's answer."""

from __future__ import annotations

from typing import Any

import pytest

from mailbox_worker.errors import (
    IdentityMisconfigured,
    MailboxWorkerError,
    ReauthRequired,
    TransientError,
)
from mailbox_worker.policy.scopes import missing_scopes, required_scopes
from mailbox_worker.tokens.microsoft import granted_scopes, refresh_error

FLOW = {"scope": ["https://graph.microsoft.com/Mail.Send", "offline_access", "openid", "profile"]}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            {"scope": "https://graph.microsoft.com/Mail.Send openid"},
            ("https://graph.microsoft.com/Mail.Send", "openid"),
        ),
        ({"scope": ["Mail.Send", "openid"]}, ("Mail.Send", "openid")),
        ({}, tuple(FLOW["scope"])),  # omitted: what was requested
        ({"scope": ""}, tuple(FLOW["scope"])),
    ],
)
def test_granted_scopes(answer: dict[str, Any], expected: tuple[str, ...]) -> None:
    assert granted_scopes(answer, FLOW) == expected


def test_an_answer_without_scope_satisfies_the_capabilities_requested() -> None:
    required = required_scopes("microsoft", ["send"])
    assert missing_scopes(required, granted_scopes({"access_token": "a"}, FLOW)) == ()


@pytest.mark.parametrize(
    ("answer", "kind", "code"),
    [
        ({"error": "invalid_grant", "error_codes": [50173]}, ReauthRequired, "invalid_grant"),
        ({"error": "interaction_required"}, ReauthRequired, "interaction_required"),
        ({"error": "temporarily_unavailable"}, TransientError, "temporarily_unavailable"),
        ({"error": "invalid_client", "error_codes": [7000222]}, IdentityMisconfigured, None),
        (
            {"error": "unauthorized_client", "error_codes": [7000112]},
            TransientError,
            "identity_rejected",
        ),
        ({"error": "invalid_scope", "error_codes": [70011]}, IdentityMisconfigured, None),
    ],
)
def test_refresh_errors(
    answer: dict[str, Any], kind: type[MailboxWorkerError], code: str | None
) -> None:
    error = refresh_error(answer)
    assert type(error) is kind
    assert error.code == (code or "identity_misconfigured")
