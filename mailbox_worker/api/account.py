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
from mailbox_worker.db.accounts import Principal
from mailbox_worker.errors import InvalidRequest, NotFound


async def get(request: web.Request) -> web.Response:
    """200: the caller's account with its return origins."""
    principal = await require(request, ACCOUNT_READ)
    return await _answer(request, principal)


async def put_return_origins(request: web.Request) -> web.Response:
    """200: the account once its return origins are replaced by the body's (normalised)."""
    principal = await require(request, ACCOUNT_WRITE)
    body = await read_json(request, "ReturnOriginsRequest")
    try:
        await services(request).accounts.set_return_origins(
            principal.account_id, list(body["return_origins"]), f"api_key:{principal.key_id}"
        )
    except ValueError as error:  # the document's "origin" format already refuses these
        raise InvalidRequest(str(error), code="invalid_origin") from None
    return await _answer(request, principal)


async def _answer(request: web.Request, principal: Principal) -> web.Response:
    accounts = services(request).accounts
    account = await accounts.get_account(principal.account_id)
    if account is None:  # deleted since the key was checked
        raise NotFound("no such account", code="account_not_found")
    origins = await accounts.return_origins(principal.account_id)
    return web.json_response(account_json(account, origins))
