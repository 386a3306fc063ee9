"""``/v1/account/export|pause|resume|erase``: the account's data rights (docs/privacy.md PP-7).

Each needs ``account:write``, the account admin's permission, which the invoicing app's
everyday key does not need. Erasure also needs the body ``{"confirm": "<the account's id>"}``,
so that no retried or mistyped request erases an account by accident; it deletes the very
key that asked, so its answer is the last one that key gets.
"""

from __future__ import annotations

from aiohttp import web

from mailbox_worker.api.auth import ACCOUNT_WRITE, require
from mailbox_worker.api.context import services
from mailbox_worker.api.parsing import read_json
from mailbox_worker.api.representations import erasure_json, pause_json
from mailbox_worker.api.services import Principal
from mailbox_worker.errors import Conflict


def _actor(principal: Principal) -> str:
    return f"api_key:{principal.key_id}"


async def export(request: web.Request) -> web.Response:
    """200: everything held about the caller's account, without a secret."""
    principal = await require(request, ACCOUNT_WRITE)
    document = await services(request).rights.export(principal.account_id)
    return web.json_response(document, headers={"Cache-Control": "no-store"})


async def pause(request: web.Request) -> web.Response:
    """200: the account paused (idempotent): its jobs are accepted and wait."""
    principal = await require(request, ACCOUNT_WRITE)
    view = await services(request).rights.pause(principal.account_id, _actor(principal))
    return web.json_response(pause_json(view))


async def resume(request: web.Request) -> web.Response:
    """200: the account resumed (idempotent): its waiting jobs are claimed again."""
    principal = await require(request, ACCOUNT_WRITE)
    view = await services(request).rights.resume(principal.account_id, _actor(principal))
    return web.json_response(pause_json(view))


async def erase(request: web.Request) -> web.Response:
    """200: what the erasure did; 409 ``confirmation_mismatch`` unless ``confirm`` is the
    caller's account id (the body is well formed; it names another account)."""
    principal = await require(request, ACCOUNT_WRITE)
    body = await read_json(request, "ErasureRequest")
    if body["confirm"] != principal.account_id:
        raise Conflict(
            "to erase the account, send its id as 'confirm'", code="confirmation_mismatch"
        )
    report = await services(request).rights.erase(principal.account_id, _actor(principal))
    return web.json_response(erasure_json(report))
