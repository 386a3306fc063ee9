"""Which google-auth refresh failures mean the grant is dead (docs/providers.md C4)."""

from __future__ import annotations

import pytest
import requests
from google.auth.exceptions import RefreshError

from mailbox_worker.tokens.google import grant_is_dead, raise_if_unavailable


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


@pytest.mark.parametrize(
    ("status", "outage"), [(502, True), (503, True), (429, True), (400, False)]
)
def test_a_token_answer_from_an_outage_is_raised_before_oauthlib_reads_it(
    status: int, outage: bool
) -> None:
    answer = requests.Response()
    answer.status_code = status
    answer._content = b"<html><body>Bad Gateway</body></html>"
    if outage:
        with pytest.raises(requests.HTTPError):
            raise_if_unavailable(answer)
    else:
        assert raise_if_unavailable(answer) is answer
