"""Graph error answers and the headers every Graph answer carries (docs/providers.md B4).

Body: ``{"error":{"code","message","innerError":{"request-id","date","client-request-id"}}}``.
Headers on every ``/v1.0`` answer: ``request-id``, ``client-request-id`` (the caller's, echoed,
or a fresh one) and ``x-ms-ags-diagnostic``. Handlers raise ``GraphFailure``; the middleware
renders it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..clock import SandboxClock
from .graph_messages import graph_time

REQUEST_ID = web.RequestKey("graph.request_id", str)
CLIENT_REQUEST_ID = web.RequestKey("graph.client_request_id", str)
# The header Graph sends with 401 answers (docs/providers.md B4).
WWW_AUTHENTICATE = (
    'Bearer realm="", '
    'authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
    'client_id="00000003-0000-0000-c000-000000000000"'
)

# Bodies for injected faults and throttling, by status (codes marked unconfirmed in
# docs/providers.md B4/B5 are best guesses, kept here in one place).
STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "The request is malformed or incorrect."),
    401: ("InvalidAuthenticationToken", "Access token has expired or is not yet valid."),
    403: ("ErrorAccessDenied", "Access is denied. Check credentials and try again."),
    404: ("ErrorItemNotFound", "The specified object was not found in the store."),
    413: ("RequestEntityTooLarge", "The maximum request length supported is 4MB."),
    429: ("ApplicationThrottled", "Application is over its MailboxConcurrency limit."),
    500: ("ErrorInternalServerError", "An internal server error occurred. The operation failed."),
    502: ("BadGateway", "The server returned an invalid or unrecognized response."),
    503: ("ServiceNotAvailable", "The service is temporarily unavailable. Please retry later."),
    504: ("GatewayTimeout", "The gateway did not receive a response in time."),
}


class GraphFailure(Exception):
    """A Graph error answer: HTTP ``status``, error ``code`` and ``message``."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def for_status(status: int, headers: Mapping[str, str] | None = None) -> GraphFailure:
    """The failure Graph answers with for ``status`` when nothing more specific applies."""
    code, message = STATUS_ERRORS.get(status, ("UnknownError", "An unknown error occurred."))
    return GraphFailure(status, code, message, headers)


def render(request: web.Request, failure: GraphFailure, moment: datetime.datetime) -> web.Response:
    """The JSON error response for ``failure``, dated ``moment``."""
    body = {
        "error": {
            "code": failure.code,
            "message": failure.message,
            "innerError": {
                "date": graph_time(moment),
                "request-id": request.get(REQUEST_ID, ""),
                "client-request-id": request.get(CLIENT_REQUEST_ID, ""),
            },
        }
    }
    return web.Response(
        status=failure.status,
        text=json.dumps(body),
        content_type="application/json",
        headers=failure.headers,
    )


async def read_limited(request: web.Request, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it proves longer than ``limit`` bytes."""
    body = bytearray()
    while True:
        piece = await request.content.read(limit + 1 - len(body))
        if not piece:
            return bytes(body)
        body.extend(piece)
        if len(body) > limit:
            return None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def graph_middleware(clock: SandboxClock) -> Middleware:
    """Request ids and error rendering (dated by ``clock``) for Graph and Outlook upload URLs."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(("/v1.0/", "/api/v2.0/")):
            return await handler(request)
        return await _with_graph_headers(request, handler, clock)

    return middleware


async def _with_graph_headers(
    request: web.Request, handler: Handler, clock: SandboxClock
) -> web.StreamResponse:
    request_id = str(uuid.uuid4())
    request[REQUEST_ID] = request_id
    request[CLIENT_REQUEST_ID] = request.headers.get("client-request-id") or request_id
    try:
        response = await handler(request)
    except GraphFailure as failure:
        response = render(request, failure, clock.utcnow())
    except web.HTTPNotFound:
        segment = request.path.rstrip("/").rpartition("/")[2]
        unknown = GraphFailure(
            400, "BadRequest", f"Resource not found for the segment '{segment}'."
        )
        response = render(request, unknown, clock.utcnow())
    except web.HTTPMethodNotAllowed:
        response = render(request, not_simulated(request), clock.utcnow())
    if not response.prepared:
        add_graph_headers(request, response)
    return response


def not_simulated(request: web.Request) -> GraphFailure:
    """501 NotImplemented, in Graph's shape: an operation Graph has and the sandbox does not
    simulate (*chosen*, docs/providers.md F)."""
    return GraphFailure(
        501,
        "NotImplemented",
        f"The sandbox does not simulate {request.method} {request.path}.",
    )


def add_graph_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``request-id``, ``client-request-id`` and ``x-ms-ags-diagnostic`` (docs/providers.md B4)."""
    response.headers["request-id"] = request.get(REQUEST_ID, "")
    response.headers["client-request-id"] = request.get(CLIENT_REQUEST_ID, "")
    response.headers["x-ms-ags-diagnostic"] = json.dumps(
        {"ServerInfo": {"DataCenter": "Sandbox", "Slice": "E", "Ring": "5", "ScaleUnit": "000"}}
    )


async def answer_now(request: web.Request, response: web.StreamResponse) -> None:
    """Write ``response`` to the client at once (with Graph's headers), so that the request is
    over only once its answer is out; nothing to do if the client hung up or the connection
    was dropped on purpose."""
    transport = request.transport
    if response.prepared or transport is None or transport.is_closing():
        return
    add_graph_headers(request, response)
    with contextlib.suppress(ConnectionError):
        await response.prepare(request)
        await response.write_eof()
