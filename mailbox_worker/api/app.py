"""The HTTP API: ``create_app`` wires routes and middlewares around the services it is given.

Middlewares, outermost first: HTTP metrics (sees the final status), then the request id
(``X-Request-Id`` on every answer, in every log line), then errors (turns every failure into
JSON naming that id). Routes and their documentation live together: every route here is in
``openapi.json`` and the other way round (``tests/unit/test_openapi_document.py``).
"""

from __future__ import annotations

from aiohttp import web

from mailbox_worker.api import (
    account,
    account_rights,
    admin_page,
    jobs,
    mailboxes,
    support_access,
    system,
)
from mailbox_worker.api.context import DOCUMENT, SERVICES
from mailbox_worker.api.document import ApiDocument
from mailbox_worker.api.errors import error_middleware
from mailbox_worker.api.http_metrics import http_metrics_middleware
from mailbox_worker.api.rate_limits import rate_limit_middleware
from mailbox_worker.api.request_id import request_id_middleware
from mailbox_worker.api.services import ApiServices

# Identifiers are opaque but made only of these characters (the document's ``Id``):
# a path segment with any other cannot name anything, and is an unknown route (404).
JOB = "/v1/jobs/{job_id:[A-Za-z0-9_-]+}"
MAILBOX = "/v1/mailboxes/{mailbox_id:[A-Za-z0-9_-]+}"


def create_app(services: ApiServices) -> web.Application:
    """The aiohttp application serving the API over ``services``.

    Counts every answered request into ``services.telemetry``.
    """
    app = web.Application(
        client_max_size=services.max_request_bytes,
        middlewares=[
            http_metrics_middleware(services.telemetry),
            request_id_middleware(),
            error_middleware(services.max_request_bytes, services.database_unavailable),
            rate_limit_middleware(services.rate_limits, services.clock, services.telemetry),
        ],
    )
    app[SERVICES] = services
    app[DOCUMENT] = ApiDocument.packaged()
    app.router.add_routes(
        [
            web.post("/v1/jobs", jobs.enqueue),
            web.post("/v1/job-batches", jobs.enqueue_batch),
            web.get("/v1/jobs", jobs.find, allow_head=False),
            web.get(JOB, jobs.get, allow_head=False),
            web.post(f"{JOB}/cancel", jobs.cancel),
            web.post(f"{JOB}/resolve", jobs.resolve),
            web.post(f"{JOB}/retry", jobs.retry),
            web.post("/v1/mailboxes", mailboxes.create),
            web.get("/v1/mailboxes", mailboxes.list_all, allow_head=False),
            web.get(MAILBOX, mailboxes.get, allow_head=False),
            web.delete(MAILBOX, mailboxes.disconnect),
            web.patch(MAILBOX, mailboxes.change),
            web.post(f"{MAILBOX}/connect", mailboxes.reconnect),
            web.get("/v1/account", account.get, allow_head=False),
            web.put("/v1/account/return-origins", account.put_return_origins),
            web.get("/v1/account/export", account_rights.export, allow_head=False),
            web.post("/v1/account/pause", account_rights.pause),
            web.post("/v1/account/resume", account_rights.resume),
            web.post("/v1/account/erase", account_rights.erase),
            web.get("/v1/account/support-access", support_access.get, allow_head=False),
            web.post("/v1/account/support-access", support_access.post),
            web.delete("/v1/account/support-access", support_access.delete),
            web.get("/oauth/callback", mailboxes.oauth_callback, allow_head=False),
            # HEAD too on the operations endpoints, for uptime checkers (never on the OAuth
            # callback: it consumes the authorization's state).
            web.get("/healthz", system.health),
            web.get("/readyz", system.readiness),
            web.get("/metrics", system.metrics),
            web.get("/openapi.json", system.openapi),
        ]
    )
    admin_page.install(app, services.admin_sessions, services.public_url or None)  # /admin
    return app
