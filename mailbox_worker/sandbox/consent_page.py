"""The sign-in + consent form both providers' authorize pages are built on: server-rendered, no
JavaScript needed.

The form POSTs back to the authorize URL. Fields: hidden inputs carrying the original request,
one checkbox ``granted_scope`` per scope the user may refuse (all checked), the text input
``login`` and two submit buttons named ``action`` (``accept`` / ``cancel``). Each provider's page
(``microsoft.consent_page``, ``google.consent_page``) chooses the wording and which scopes get a
checkbox.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from aiohttp import web

_STYLE = (
    "body{font-family:Segoe UI,Arial,sans-serif;background:#f2f2f2}"
    "main{background:#fff;max-width:440px;margin:4em auto;padding:2em;box-shadow:0 2px 6px #aaa}"
    ".error{color:#a80000}label{display:block;margin:.3em 0}"
)


def render_consent_form(
    *,
    title: str,
    heading: str,
    application_name: str,
    invitation: str,
    action_url: str,
    hidden_inputs: str,
    scope_section: str,
    login_label: str,
    login: str,
    accept_label: str,
    error: str | None,
) -> str:
    """The whole page. ``title``, ``heading``, ``invitation``, ``login_label`` and
    ``accept_label`` are the caller's fixed wording (not escaped); ``hidden_inputs`` and
    ``scope_section`` are HTML built with ``hidden_inputs`` / ``scope_checkboxes``."""
    problem = f'<p class="error" id="error">{escape(error)}</p>' if error else ""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>{_STYLE}</style></head><body><main>"
        f"<h1>{heading}</h1>"
        f"<p><strong id='application'>{escape(application_name)}</strong> "
        f"(sandbox) {invitation}</p>"
        f'<form method="post" action="{escape(action_url)}">{hidden_inputs}'
        f"{scope_section}"
        f'<p><label for="login">{login_label}</label><input type="text" id="login" name="login" '
        f'value="{escape(login)}" size="40" autocomplete="username"></p>{problem}'
        f'<p><button type="submit" name="action" value="accept">{accept_label}</button> '
        '<button type="submit" name="action" value="cancel">Cancel</button></p>'
        "</form></main></body></html>"
    )


async def read_consent_form(request: web.Request) -> tuple[dict[str, str], list[str]]:
    """A posted form's text fields, and the ``granted_scope`` values the user left ticked."""
    form = await request.post()
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    granted = [value for value in form.getall("granted_scope", []) if isinstance(value, str)]
    return fields, granted


def hidden_inputs(request_fields: Mapping[str, str], names: Sequence[str]) -> str:
    """The request's fields, carried through the form unchanged."""
    return "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(request_fields[name])}">'
        for name in names
        if name in request_fields
    )


def scope_checkboxes(scopes: Sequence[str]) -> str:
    """One checked ``granted_scope`` box per scope: the user may untick any of them."""
    return "".join(
        f'<label><input type="checkbox" name="granted_scope" value="{escape(scope)}" checked> '
        f"{escape(scope)}</label>"
        for scope in scopes
    )
