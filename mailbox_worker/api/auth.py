"""API keys: ``Authorization: Bearer <key>`` → ``Principal``, and per-operation permissions.

A missing, malformed, unknown or revoked key is the same ``401 unauthenticated`` (the error
middleware adds ``WWW-Authenticate: Bearer``); a key without the operation's permission is
``403 forbidden`` naming the permission. A valid key's request is charged to its rate limit
(``rate_limits.admit``: ``429 rate_limited`` when over it). The key itself is never logged
nor echoed.
"""

from __future__ import annotations

from aiohttp import web

from mailbox_worker.api.context import services
from mailbox_worker.api.rate_limits import admit
from mailbox_worker.api.services import Principal
from mailbox_worker.errors import Forbidden, Unauthenticated

JOBS_READ = "jobs:read"
JOBS_WRITE = "jobs:write"
MAILBOXES_READ = "mailboxes:read"
MAILBOXES_WRITE = "mailboxes:write"
ACCOUNT_READ = "account:read"
ACCOUNT_WRITE = "account:write"


async def authenticate(request: web.Request) -> Principal:
    """The caller, from its bearer API key; ``Unauthenticated`` otherwise."""
    scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        raise Unauthenticated("send an API key as 'Authorization: Bearer <key>'")
    principal = await services(request).accounts.authenticate(credentials)
    if principal is None:
        raise Unauthenticated("the API key is not valid (unknown, malformed or revoked)")
    admit(request, principal.key_id)
    return principal


async def require(request: web.Request, permission: str) -> Principal:
    """The caller, if its API key has ``permission``; ``Forbidden`` naming it otherwise."""
    principal = await authenticate(request)
    if permission not in principal.permissions:
        raise Forbidden(f"this API key lacks the {permission!r} permission")
    return principal
