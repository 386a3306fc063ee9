"""``/v1/mailboxes`` and the OAuth callback: connect, list, read, change limits, reconnect,
disconnect."""

from __future__ import annotations

import html
import importlib.resources
from string import Template

from aiohttp import web

from mailbox_worker.api.auth import ACCOUNT_WRITE, MAILBOXES_READ, MAILBOXES_WRITE, require
from mailbox_worker.api.context import services
from mailbox_worker.api.pagination import (
    check_parameters,
    flag,
    next_cursor,
    page_after,
    page_limit,
)
from mailbox_worker.api.parsing import read_json
from mailbox_worker.api.representations import mailbox_json, mailbox_location
from mailbox_worker.api.services import CONNECTED_OUTCOME, ConnectionStart

# The callback's URL carries a one-time code: keep it out of caches and Referer headers.
CALLBACK_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
PAGE_HEADERS = {**CALLBACK_HEADERS, "Content-Security-Policy": "default-src 'none'"}
LIST = "mailboxes"
"""The list a ``GET /v1/mailboxes`` cursor belongs to."""


async def create(request: web.Request) -> web.Response:
    """201: the new mailbox, pending consent, and where to send the admin's browser."""
    principal = await require(request, MAILBOXES_WRITE)
    body = await read_json(request, "MailboxRequest")
    start = await services(request).mailboxes.create(
        principal,
        body["provider"],
        list(body["capabilities"]),
        body.get("return_url"),
        body.get("login_hint"),
    )
    return web.json_response(
        _connection_json(start),
        status=201,
        headers={"Location": mailbox_location(start.mailbox.id)},
    )


async def list_all(request: web.Request) -> web.Response:
    """200 with a page of the caller's mailboxes, oldest first, and the next page's cursor;
    disconnected mailboxes only with ``include_disconnected=true``."""
    principal = await require(request, MAILBOXES_READ)
    check_parameters(request, {"limit", "cursor", "include_disconnected"}, repeatable=())
    limit = page_limit(request)
    mailboxes = await services(request).mailboxes.list(
        principal,
        limit=limit + 1,
        after=page_after(request, LIST),
        include_disconnected=flag(request, "include_disconnected"),
    )
    cursor = next_cursor(LIST, [(mailbox.created_at, mailbox.id) for mailbox in mailboxes], limit)
    return web.json_response(
        {
            "mailboxes": [mailbox_json(mailbox) for mailbox in mailboxes[:limit]],
            "next_cursor": cursor,
        }
    )


async def get(request: web.Request) -> web.Response:
    principal = await require(request, MAILBOXES_READ)
    mailbox = await services(request).mailboxes.get(principal, request.match_info["mailbox_id"])
    return web.json_response(mailbox_json(mailbox))


async def reconnect(request: web.Request) -> web.Response:
    principal = await require(request, MAILBOXES_WRITE)
    body = await read_json(request, "ReconnectRequest", optional=True)
    start = await services(request).mailboxes.reconnect(
        principal, request.match_info["mailbox_id"], body.get("return_url")
    )
    return web.json_response(_connection_json(start))


async def disconnect(request: web.Request) -> web.Response:
    """200 with the mailbox, now disconnected (idempotent)."""
    principal = await require(request, MAILBOXES_WRITE)
    mailbox = await services(request).mailboxes.disconnect(
        principal, request.match_info["mailbox_id"]
    )
    return web.json_response(mailbox_json(mailbox))


async def change(request: web.Request) -> web.Response:
    """200 with the mailbox: its sending limits changed (``MailboxChange``; needs
    account:write, the account admin's permission: limits decide how fast its invoices go)."""
    principal = await require(request, ACCOUNT_WRITE)
    body = await read_json(request, "MailboxChange")
    mailbox = await services(request).mailboxes.set_limits(
        principal, request.match_info["mailbox_id"], dict(body["limits"])
    )
    return web.json_response(mailbox_json(mailbox))


async def oauth_callback(request: web.Request) -> web.Response:
    """The identity provider's redirect: finish the authorization, then tell the admin.

    No API key: the single-use ``state`` in the query is the credential, checked by the
    connector. 303 to the return URL when one is known, else a small page.
    """
    result = await services(request).mailboxes.complete(dict(request.query))
    if result.redirect_url:
        return web.Response(
            status=303, headers={"Location": result.redirect_url, **CALLBACK_HEADERS}
        )
    connected = result.outcome == CONNECTED_OUTCOME
    page = _page_template().substitute(
        title="Mailbox connected" if connected else "Mailbox not connected",
        message=html.escape(result.message),
        outcome=html.escape(result.outcome),
        link=_admin_consent_link(result.admin_consent_url),
    )
    return web.Response(
        text=page,
        status=200 if connected else 400,
        content_type="text/html",
        charset="utf-8",
        headers=PAGE_HEADERS,
    )


def _admin_consent_link(url: str | None) -> str:
    """The administrator's approval link as a paragraph of the callback page, or nothing."""
    if not url:
        return ""
    escaped = html.escape(url)
    return f'<p>Approval link for your administrator: <a href="{escaped}">{escaped}</a></p>'


def _page_template() -> Template:
    source = importlib.resources.files("mailbox_worker.api").joinpath(
        "templates/oauth_callback.html"
    )
    return Template(source.read_text(encoding="utf-8"))


def _connection_json(start: ConnectionStart) -> dict[str, object]:
    return {"mailbox": mailbox_json(start.mailbox), "authorization_url": start.authorization_url}
