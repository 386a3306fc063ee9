"""Google's "Sign in with Google" + granular consent page (docs/providers.md C6).

The sign-in scopes (openid/email/profile) are listed without a checkbox (always granted); every
other requested scope gets a ``granted_scope`` checkbox, checked by default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from ..consent_page import hidden_inputs, render_consent_form, scope_checkboxes

HIDDEN_FIELDS = (
    "auth_request",
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "access_type",
    "prompt",
    "include_granted_scopes",
    "login_hint",
    "code_challenge",
    "code_challenge_method",
)


def render_consent_page(
    *,
    action_url: str,
    application_name: str,
    sign_in_scopes: Sequence[str],
    optional_scopes: Sequence[str],
    request_fields: Mapping[str, str],
    login: str,
    error: str | None = None,
) -> str:
    """Google's sign-in + granular consent page for ``optional_scopes``."""
    always = "".join(f"<li>{escape(scope)}</li>" for scope in sign_in_scopes)
    checkboxes = scope_checkboxes(optional_scopes)
    return render_consent_form(
        title="Sign in - Google Accounts",
        heading="Sign in with Google",
        application_name=application_name,
        invitation="wants access to your Google Account",
        action_url=action_url,
        hidden_inputs=hidden_inputs(request_fields, HIDDEN_FIELDS),
        scope_section=(
            f"<ul id='sign-in-scopes'>{always}</ul>"
            f"<fieldset><legend>Select what it can access</legend>{checkboxes}</fieldset>"
        ),
        login_label="Email",
        login=login,
        accept_label="Continue",
        error=error,
    )
