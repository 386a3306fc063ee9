"""What every handler reaches through the application: the services and the OpenAPI document.

Stored under typed ``web.AppKey``s by ``create_app``; nothing lives at module level.
"""

from __future__ import annotations

from aiohttp import web

from mailbox_worker.api.document import ApiDocument
from mailbox_worker.api.services import ApiServices

SERVICES = web.AppKey("services", ApiServices)
DOCUMENT = web.AppKey("document", ApiDocument)


def services(request: web.Request) -> ApiServices:
    return request.app[SERVICES]


def document(request: web.Request) -> ApiDocument:
    return request.app[DOCUMENT]
