"""Every failure becomes JSON ``{"error": {"code", "message", "request_id", "details"?}}``.

``error_middleware`` is the only place that turns exceptions into answers:

- ``RequestError`` (ours, from ``mailbox_worker.errors`` or below) → its ``status`` and ``code``
  (``RequestTimeout``, a body too slow, also closes the connection);
- aiohttp's ``HTTPException`` (unknown route, wrong method, body too large) → a stable code;
- an exception that says the database cannot be reached (the ``database_unavailable``
  predicate the middleware is given) → ``503 database_unavailable`` with ``Retry-After``;
- a full lane of costly checks (``lanes.LaneFull``) → ``503 server_busy`` with ``Retry-After``;
  a client gone before its checks' turn (``lanes.WorkAbandoned``) → 499, as one that hung up;
- anything else → ``500 internal_error`` with a generic message. The traceback goes to the
  server log only, and without the exception's message unless it is one of ours: foreign
  messages (a database driver's, say) may quote request data.

``request_id`` is the answer's ``X-Request-Id`` (``mailbox_worker.api.request_id``).

Messages never contain a secret (API key, token) nor request content: ours are written so by
contract (``mailbox_worker.errors``), and validation details name fields, never values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from mailbox_worker import lanes
from mailbox_worker.api.request_id import HEADER as REQUEST_ID_HEADER
from mailbox_worker.api.request_id import new_id, request_id
from mailbox_worker.errors import (
    RequestError,
    RequestTimeout,
    ValidationFailed,
    redacted_traceback,
)
from mailbox_worker.logs import REQUEST_ID

log = logging.getLogger(__name__)

HTTP_CODES: Mapping[int, str] = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}
HTTP_MESSAGES: Mapping[int, str] = {
    400: "the request could not be read",
    404: "no such resource",
    415: "unsupported media type",
}
CLIENT_CLOSED_REQUEST = 499  # nginx's convention, counted by the HTTP metrics
DATABASE_RETRY_AFTER = 5  # seconds a client waits after 503 database_unavailable
# Headers of aiohttp's own exceptions worth keeping (405 must say what is allowed).
KEPT_HEADERS = ("Allow",)


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    identifier: str | None = None,
    details: Sequence[Mapping[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """The JSON answer for a failure, naming ``identifier`` in its body and its
    ``X-Request-Id`` header; when None, the id of the request being handled (``REQUEST_ID``,
    so an answer made by any middleware inside ``request_id_middleware`` agrees with it), else
    a fresh one."""
    identifier = identifier or REQUEST_ID.get() or new_id()
    error: dict[str, object] = {"code": code, "message": message, "request_id": identifier}
    if details:
        error["details"] = [dict(detail) for detail in details]
    response = web.json_response({"error": error}, status=status, headers=headers)
    response.headers[REQUEST_ID_HEADER] = identifier
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def error_middleware(
    max_request_bytes: int,
    database_unavailable: Callable[[BaseException], bool] = lambda _error: False,
) -> Middleware:
    """The middleware; ``max_request_bytes`` is the body limit a 413 answer states, and
    ``database_unavailable`` tells which exceptions mean the database cannot be reached."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except RequestError as error:
            details = error.details if isinstance(error, ValidationFailed) else None
            response = error_response(
                error.status,
                error.code,
                error.message,
                identifier=request_id(request),
                details=details,
            )
            if isinstance(error, RequestTimeout):
                response.force_close()  # the rest of a body too slow to wait for: not reused
            return response
        except lanes.LaneFull as full:
            # Too many requests wait for the costly checks' thread (mailbox_worker/lanes.py).
            log.warning("%s: refused %s %s", full, request.method, route_template(request))
            return error_response(
                503,
                "server_busy",
                "the server is busy with other requests too costly to check on its event loop; "
                "try again later",
                identifier=request_id(request),
                headers={"Retry-After": str(full.retry_after)},
            )
        except web.HTTPException as error:
            if error.status < 400:
                raise  # a redirect raised by aiohttp itself: not a failure
            return _http_error(request, error, max_request_bytes)
        except Exception as error:
            if isinstance(error, lanes.WorkAbandoned) or (
                isinstance(error, ConnectionResetError) and client_gone(request)
            ):
                # The client hung up mid-request (aiohttp's ClientConnectionResetError): no
                # one is left to answer, and it is not the server's failure.
                log.info(
                    "client closed the connection during %s %s",
                    request.method,
                    route_template(request),
                )
                return web.Response(status=CLIENT_CLOSED_REQUEST)
            if database_unavailable(error):
                # A reset of the database's connection (a PostgreSQL restart) lands here too,
                # while the client still waits: it must hear 503 and retry, not a 4xx.
                log.warning(
                    "database unavailable during %s %s (%s)",
                    request.method,
                    route_template(request),
                    type(error).__name__,
                )
                return error_response(
                    503,
                    "database_unavailable",
                    "the database cannot be reached; try again shortly",
                    identifier=request_id(request),
                    headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
                )
            log.error(
                "unhandled %s in %s %s\n%s",
                type(error).__name__,
                request.method,
                route_template(request),
                redacted_traceback(error),
            )
            return error_response(
                500,
                "internal_error",
                "internal error; it was logged",
                identifier=request_id(request),
            )

    return middleware


def client_gone(request: web.Request) -> bool:
    """Whether the client's own connection is closed (then a reset was the client's). It only
    reads the transport's state, so a lane's thread may ask it too (``api/parsing.py``)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _http_error(
    request: web.Request, error: web.HTTPException, max_request_bytes: int
) -> web.Response:
    status = error.status
    code = HTTP_CODES.get(status, "bad_request" if status < 500 else "internal_error")
    if status == 405:
        allowed = error.headers.get("Allow", "")
        message = f"{request.method} is not allowed here; allowed: {allowed or 'none'}"
    elif status == 413:
        message = f"the request body exceeds the limit of {max_request_bytes} bytes"
    else:
        message = HTTP_MESSAGES.get(status, error.reason.lower())
    headers = {name: error.headers[name] for name in KEPT_HEADERS if name in error.headers}
    return error_response(status, code, message, identifier=request_id(request), headers=headers)


def route_template(request: web.Request) -> str:
    """The matched route's template (``/v1/jobs/{job_id}``), never the raw path or query."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"
