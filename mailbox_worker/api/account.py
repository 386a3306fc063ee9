"""``/v1/account``: the caller's account, and the origins its admins may return to.

A mailbox's ``return_url`` must be on one of the account's return origins (or on the
daemon's own origin): see ``mailboxes.service``. Reading needs ``account:read``; replacing
the origins needs ``account:write``, which the invoicing app's everyday key does not need
(whoever holds it decides where admins' browsers may be sent).
"""

from __future__ import annotations

from aiohttp import web

from mailbox_worker.api.auth import ACCOUNT_READ, ACCOUNT_WRITE, require
from mailbox_worker.api.context import services
from mailbox_worker.api.parsing import read_json
from mailbox_worker.api.representations import account_json


async def get(request: web.Request) -> web.Response:
    """200: the caller's account with its return origins."""
    principal = await require(request, ACCOUNT_READ)
    return web.json_response(account_json(await services(request).accounts.account(principal)))


async def put_return_origins(request: web.Request) -> web.Response:
    """200: the account once its return origins are replaced by the body's (normalised)."""
    principal = await require(request, ACCOUNT_WRITE)
    body = await read_json(request, "ReturnOriginsRequest")
    accounts = services(request).accounts
    account = await accounts.set_return_origins(principal, list(body["return_origins"]))
    return web.json_response(account_json(account))
