"""Operations endpoints: liveness, readiness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

import logging

from aiohttp import web

from mailbox_worker.api.context import document, services

log = logging.getLogger(__name__)


async def health(request: web.Request) -> web.Response:
    """200 while the process can answer at all."""
    return web.json_response({"status": "ok"})


async def readiness(request: web.Request) -> web.Response:
    """200 when every readiness check passes, else 503 naming the checks."""
    try:
        checks = {name: bool(passed) for name, passed in (await services(request).ready()).items()}
    except Exception as error:  # readiness reports a failure, it does not raise one
        log.warning("readiness checks failed to run: %s", type(error).__name__)
        checks = {}
    ready = bool(checks) and all(checks.values())
    return web.json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status=200 if ready else 503,
    )


async def metrics(request: web.Request) -> web.Response:
    body, content_type = services(request).metrics_page()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=document(request).raw, headers={"Content-Type": "application/json"})
