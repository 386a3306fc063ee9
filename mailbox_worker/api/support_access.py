"""``/v1/account/support-access``: the account admin's consent to support access
(docs/privacy.md PP-3, LU-5).

``POST`` grants it for ``hours`` (at most a week) with a ``reason``, replacing an active grant;
``DELETE`` revokes it now; ``GET`` shows the active one. Granting and revoking need
``account:write``, the account admin's permission; reading needs ``account:read``. Each change
is audited as the key that made it, and every access made under a grant is audited too.
"""

from __future__ import annotations

from aiohttp import web

from mailbox_worker.api.auth import ACCOUNT_READ, ACCOUNT_WRITE, require
from mailbox_worker.api.context import services
from mailbox_worker.api.parsing import read_json
from mailbox_worker.api.representations import support_access_json


async def get(request: web.Request) -> web.Response:
    """200: the active grant, or ``null``."""
    principal = await require(request, ACCOUNT_READ)
    grant = await services(request).accounts.support_grant(principal)
    return web.json_response(support_access_json(grant))


async def post(request: web.Request) -> web.Response:
    """201: the new grant (``400 invalid_support_grant`` for hours or reason out of range)."""
    principal = await require(request, ACCOUNT_WRITE)
    body = await read_json(request, "SupportAccessRequest")
    accounts = services(request).accounts
    grant = await accounts.grant_support(principal, int(body["hours"]), str(body["reason"]))
    return web.json_response(support_access_json(grant), status=201)


async def delete(request: web.Request) -> web.Response:
    """200: no grant is active any more; ``revoked`` is the one just ended, if any."""
    principal = await require(request, ACCOUNT_WRITE)
    revoked = await services(request).accounts.revoke_support(principal)
    return web.json_response(support_access_json(None, revoked=revoked))
