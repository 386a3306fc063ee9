"""Which google-auth refresh failures mean the grant is dead (providers.md C4)."""

from __future__ import annotations

import pytest
from google.auth.exceptions import RefreshError

from mailbox_worker.tokens.google import grant_is_dead


@pytest.mark.parametrize(
    ("error", "dead"),
    [
        (
            RefreshError(
                "invalid_grant: Token has been expired or revoked.",
                {
                    "error": "invalid_grant",
                    "error_description": "Token has been expired or revoked.",
                },
            ),
            True,
        ),
        (RefreshError("invalid_grant: Bad Request", {"error": "invalid_grant"}), True),
        (
            # google-auth's own message for invalid_grant + error_subtype invalid_rapt
            RefreshError(
                "Reauthentication is needed. Please run `gcloud auth application-default login`"
                " to reauthenticate."
            ),
            True,
        ),
        (RefreshError("internal_failure", {"error": "internal_failure"}, retryable=True), False),
        (RefreshError("invalid_client: Unauthorized", {"error": "invalid_client"}), False),
    ],
)
def test_grant_is_dead(error: RefreshError, dead: bool) -> None:
    assert grant_is_dead(error) is dead
