"""The operations-only HTTP app of a worker process (``serve --role worker``): liveness,
readiness and its own Prometheus metrics, and nothing of the API (docs/operations.md)."""

from __future__ import annotations

from aiohttp import web

from mailbox_worker.api import system
from mailbox_worker.api.context import SERVICES
from mailbox_worker.api.errors import error_middleware
from mailbox_worker.api.http_metrics import http_metrics_middleware
from mailbox_worker.api.services import ApiServices


def create_operations_app(services: ApiServices) -> web.Application:
    """``/healthz``, ``/readyz`` and ``/metrics`` over ``services``; every other path is a
    JSON 404."""
    app = web.Application(
        client_max_size=services.max_request_bytes,
        middlewares=[
            http_metrics_middleware(services.telemetry),
            error_middleware(services.max_request_bytes, services.database_unavailable),
        ],
    )
    app[SERVICES] = services
    app.router.add_routes(
        [
            web.get("/healthz", system.health),
            web.get("/readyz", system.readiness),
            web.get("/metrics", system.metrics),
        ]
    )
    return app
