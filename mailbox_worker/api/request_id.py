"""``X-Request-Id``: one identifier per request, on its answer and in its log lines, for support.

``request_id_middleware`` runs outside the error middleware, so every answer the application
makes carries the header, failures included (their JSON body also names it, as
``error.request_id``: ``mailbox_worker.api.errors``). An incoming ``X-Request-Id`` is kept
when it is well formed (``WELL_FORMED``: 1 to 128 characters of a safe set, so it can be
logged and echoed as is); otherwise the server draws one. While the request is handled, the
id is in ``mailbox_worker.logs.REQUEST_ID``, which the log handler adds to every record
(``request_id`` in JSON lines, docs/logging.md).

Answers made below the application (a request aiohttp cannot parse, a head too slow, a
connection over the limit: ``mailbox_worker.api.server``) draw their own id with ``new_id``.
"""

from __future__ import annotations

import re
import secrets

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from mailbox_worker.logs import REQUEST_ID

HEADER = "X-Request-Id"
WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", re.ASCII)
"""Letters, digits, ``.``, ``_``, ``:`` and ``-``; at most 128 characters (UUIDs, ULIDs and
most proxies' ids fit): nothing that could forge a log line or a header."""
REQUEST_ID_KEY = web.RequestKey("request_id", str)


def new_id() -> str:
    """A fresh id: ``req_`` and 32 hex digits."""
    return f"req_{secrets.token_hex(16)}"


def chosen_id(incoming: str | None) -> str:
    """The client's id when it is ``WELL_FORMED``, a fresh one otherwise."""
    if incoming is not None and WELL_FORMED.fullmatch(incoming):
        return incoming
    return new_id()


def request_id(request: web.Request) -> str:
    """The id of ``request`` (set by the middleware); a fresh one if the middleware did not run."""
    return request.get(REQUEST_ID_KEY) or new_id()


def request_id_middleware() -> Middleware:
    """Give the request its id (``request[REQUEST_ID_KEY]``, ``REQUEST_ID`` for logs) and put
    it on the answer, including an ``HTTPException`` raised through (a redirect)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        identifier = chosen_id(request.headers.get(HEADER))
        request[REQUEST_ID_KEY] = identifier
        token = REQUEST_ID.set(identifier)
        try:
            response = await handler(request)
        except web.HTTPException as error:
            error.headers[HEADER] = identifier
            raise
        finally:
            REQUEST_ID.reset(token)
        response.headers[HEADER] = identifier
        return response

    return middleware
