"""The sign-in + consent page of the authorize endpoint, server-rendered, no JavaScript needed.

The form POSTs back to the same authorize URL. Fields: hidden inputs carrying the original
request, one checkbox ``granted_scope`` per requested scope (all checked), the text input
``login`` and two submit buttons named ``action`` (``accept`` / ``cancel``).

Entra's real consent page has no per-scope checkbox: a user accepts or cancels the whole list.
The checkboxes are a sandbox switch used to test "the user granted fewer scopes than asked"
(which in reality happens through admin policies, incremental consent or Google-style granular
consent).

``render_google_consent_page`` is Google's granular-consent screen (providers.md C6) with the same
form conventions: the sign-in scopes (openid/email/profile) are listed without a checkbox (always
granted), every other requested scope gets a ``granted_scope`` checkbox, checked by default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

_STYLE = (
    "body{font-family:Segoe UI,Arial,sans-serif;background:#f2f2f2}"
    "main{background:#fff;max-width:440px;margin:4em auto;padding:2em;box-shadow:0 2px 6px #aaa}"
    ".error{color:#a80000}label{display:block;margin:.3em 0}"
)

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
    hidden = _hidden_inputs(request_fields, HIDDEN_FIELDS)
    checkboxes = _scope_checkboxes(requested_scopes)
    problem = f'<p class="error" id="error">{escape(error)}</p>' if error else ""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Permissions requested</title><style>{_STYLE}</style></head><body><main>"
        "<h1>Permissions requested</h1>"
        f"<p><strong id='application'>{escape(application_name)}</strong> "
        "(sandbox) would like to:</p>"
        f'<form method="post" action="{escape(action_url)}">{hidden}'
        f"<fieldset><legend>Permissions</legend>{checkboxes}</fieldset>"
        f'<p><label for="login">Account</label><input type="text" id="login" name="login" '
        f'value="{escape(login)}" size="40" autocomplete="username"></p>{problem}'
        '<p><button type="submit" name="action" value="accept">Accept</button> '
        '<button type="submit" name="action" value="cancel">Cancel</button></p>'
        "</form></main></body></html>"
    )


GOOGLE_HIDDEN_FIELDS = (
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


def render_google_consent_page(
    *,
    action_url: str,
    application_name: str,
    sign_in_scopes: Sequence[str],
    optional_scopes: Sequence[str],
    request_fields: Mapping[str, str],
    login: str,
    error: str | None = None,
) -> str:
    """Google's "Sign in with Google" + granular consent page for ``optional_scopes``."""
    hidden = _hidden_inputs(request_fields, GOOGLE_HIDDEN_FIELDS)
    always = "".join(f"<li>{escape(scope)}</li>" for scope in sign_in_scopes)
    checkboxes = _scope_checkboxes(optional_scopes)
    problem = f'<p class="error" id="error">{escape(error)}</p>' if error else ""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Sign in - Google Accounts</title><style>{_STYLE}</style></head><body><main>"
        "<h1>Sign in with Google</h1>"
        f"<p><strong id='application'>{escape(application_name)}</strong> "
        "(sandbox) wants access to your Google Account</p>"
        f'<form method="post" action="{escape(action_url)}">{hidden}'
        f"<ul id='sign-in-scopes'>{always}</ul>"
        f"<fieldset><legend>Select what it can access</legend>{checkboxes}</fieldset>"
        f'<p><label for="login">Email</label><input type="text" id="login" name="login" '
        f'value="{escape(login)}" size="40" autocomplete="username"></p>{problem}'
        '<p><button type="submit" name="action" value="accept">Continue</button> '
        '<button type="submit" name="action" value="cancel">Cancel</button></p>'
        "</form></main></body></html>"
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


def _hidden_inputs(request_fields: Mapping[str, str], names: Sequence[str]) -> str:
    """The request's fields, carried through the form unchanged."""
    return "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(request_fields[name])}">'
        for name in names
        if name in request_fields
    )


def _scope_checkboxes(scopes: Sequence[str]) -> str:
    """One checked ``granted_scope`` box per scope: the user may untick any of them."""
    return "".join(
        f'<label><input type="checkbox" name="granted_scope" value="{escape(scope)}" checked> '
        f"{escape(scope)}</label>"
        for scope in scopes
    )
