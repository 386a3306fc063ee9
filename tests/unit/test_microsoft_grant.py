"""What a Microsoft code redemption granted, read from the token endpoint's answer."""

from __future__ import annotations

from typing import Any

import pytest

from mailbox_worker.policy.scopes import missing_scopes, required_scopes
from mailbox_worker.tokens.microsoft import granted_scopes

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
