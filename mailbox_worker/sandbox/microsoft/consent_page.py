"""The sign-in + consent page of Entra's authorize endpoint, and the ``form_post`` answer page.

Entra's real consent page has no per-scope checkbox: a user accepts or cancels the whole list.
The checkboxes are a sandbox switch used to test "the user granted fewer scopes than asked"
(which in reality happens through admin policies, incremental consent or Google-style granular
consent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from ..consent_page import hidden_inputs, render_consent_form, scope_checkboxes

HIDDEN_FIELDS = (
    "client_id",
    "redirect_uri",
    "response_type",
    "response_mode",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "login_hint",
    "prompt",
)


def render_consent_page(
    *,
    action_url: str,
    application_name: str,
    requested_scopes: Sequence[str],
    request_fields: Mapping[str, str],
    login: str,
    error: str | None = None,
) -> str:
    """The HTML page asking the user to sign in and accept ``requested_scopes``."""
    checkboxes = scope_checkboxes(requested_scopes)
    return render_consent_form(
        title="Permissions requested",
        heading="Permissions requested",
        application_name=application_name,
        invitation="would like to:",
        action_url=action_url,
        hidden_inputs=hidden_inputs(request_fields, HIDDEN_FIELDS),
        scope_section=f"<fieldset><legend>Permissions</legend>{checkboxes}</fieldset>",
        login_label="Account",
        login=login,
        accept_label="Accept",
        error=error,
    )


def render_form_post(redirect_uri: str, parameters: Mapping[str, str]) -> str:
    """``response_mode=form_post``: a page that POSTs the answer to the redirect URI."""
    fields = "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'
        for name, value in parameters.items()
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Working...</title></head>"
        f'<body onload="document.forms[0].submit()"><form method="post" '
        f'action="{escape(redirect_uri)}">{fields}'
        "<noscript><button type='submit'>Continue</button></noscript></form></body></html>"
    )
