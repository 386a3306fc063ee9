"""Counting HTTP requests by method, route template and status, through the telemetry port.

Labels stay bounded: the route is the matched template (``/v1/jobs/{job_id}``) or
``unmatched`` (no route, or a method the route does not take), and an unusual method is
counted as ``other``. A request cancelled before its answer counts as status 499.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from mailbox_worker.api.errors import route_template
from mailbox_worker.telemetry import Telemetry

CLIENT_CLOSED_REQUEST = 499  # nginx's convention: no answer was sent, and it is not a 5xx
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def http_metrics_middleware(telemetry: Telemetry) -> Middleware:
    """Counts every answered request into ``telemetry.http_request``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED_REQUEST  # the client left, or the server is stopping
            raise
        finally:
            method = request.method if request.method in METHODS else "other"
            telemetry.http_request(method, route_template(request), status)

    return middleware
