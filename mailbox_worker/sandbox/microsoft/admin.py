"""The Microsoft simulator's inspection and control API, JSON under ``/_sandbox/``.

* ``GET /_sandbox/messages[?mailbox=addr&folder=sent|drafts]`` — stored messages;
* ``GET /_sandbox/messages/{id}/raw`` — the RFC 822 bytes (``message/rfc822``);
* ``GET /_sandbox/messages/{id}/attachments/{index}`` — one attachment's bytes;
* ``POST /_sandbox/clients`` — ``{client_id, client_secret, redirect_uris, name}``;
* ``POST /_sandbox/users`` — ``{address, display_name?, tenant?, object_id?, mailbox_enabled?}``;
* ``POST /_sandbox/users/{address}/scenario`` — ``{"scenario": ...}`` (see ``state.SCENARIOS``).

Counters, faults, settings and reset are the shared control API (``sandbox.admin``). Every
operation is a thin wrapper over a ``MicrosoftState`` method, which tests may call directly.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..admin import json_object, problem_response, register_client
from .state import SCENARIOS, MicrosoftState, StoredMessage, UnknownUserError


def message_summary(message: StoredMessage) -> dict[str, Any]:
    """The inspection API's view of one stored message."""
    return {
        "id": message.id,
        "mailbox": message.mailbox,
        "folder": message.folder,
        "internet_message_id": message.internet_message_id,
        "subject": message.subject,
        "from": message.sender,
        "to": message.to,
        "cc": message.cc,
        "bcc": message.bcc,
        "created_at": message.created_at,
        "size": len(message.raw),
        "client_id": message.client_id,
        "attachments": [
            {
                "name": attachment.name,
                "content_type": attachment.content_type,
                "size": len(attachment.data),
                "sha256": attachment.sha256,
            }
            for attachment in message.attachments
        ],
    }


class AdminEndpoints:
    """Handlers for Microsoft's part of ``/_sandbox/``."""

    def __init__(self, state: MicrosoftState) -> None:
        self._state = state

    def routes(self) -> list[web.RouteDef]:
        """The aiohttp routes these handlers serve."""
        return [
            web.get("/_sandbox/messages", self.list_messages),
            web.get("/_sandbox/concurrency", self.concurrency),
            web.get("/_sandbox/messages/{message_id}/raw", self.raw_message),
            web.get("/_sandbox/messages/{message_id}/attachments/{index}", self.attachment),
            web.post("/_sandbox/clients", self.register_client),
            web.post("/_sandbox/users", self.add_user),
            web.post("/_sandbox/users/{address}/scenario", self.scenario),
        ]

    async def list_messages(self, request: web.Request) -> web.Response:
        """Stored messages, oldest first."""
        folder = request.query.get("folder")
        if folder not in (None, "sent", "drafts"):
            return problem_response(400, "folder must be 'sent' or 'drafts'")
        messages = self._state.messages(request.query.get("mailbox"), folder)
        return web.json_response({"messages": [message_summary(item) for item in messages]})

    async def concurrency(self, request: web.Request) -> web.Response:
        """The most Graph requests in progress at once, per mailbox, since the last reset."""
        return web.json_response({"peak_in_flight": dict(self._state.peak_in_flight)})

    def _message(self, request: web.Request) -> StoredMessage:
        message = self._state.message(request.match_info["message_id"])
        if message is None:
            raise web.HTTPNotFound(
                text=json.dumps({"error": "no such message"}), content_type="application/json"
            )
        return message

    async def raw_message(self, request: web.Request) -> web.Response:
        """The stored RFC 822 bytes."""
        return web.Response(body=self._message(request).raw, content_type="message/rfc822")

    async def attachment(self, request: web.Request) -> web.Response:
        """One attachment's bytes, with its content type."""
        message = self._message(request)
        try:
            item = message.attachments[int(request.match_info["index"])]
        except (ValueError, IndexError):
            return problem_response(404, "no such attachment")
        response = web.Response(body=item.data)
        response.headers["Content-Type"] = item.content_type
        return response

    async def register_client(self, request: web.Request) -> web.Response:
        """Register (or replace) an OAuth client; redirect URIs then match exactly."""
        return await register_client(request, self._state.register_client)

    async def add_user(self, request: web.Request) -> web.Response:
        """Add (or replace) a user."""
        document = await json_object(request)
        address = document.get("address")
        if not isinstance(address, str) or "@" not in address:
            return problem_response(400, "address is required")
        user = self._state.add_user(
            address,
            display_name=document.get("display_name"),
            tenant=str(document.get("tenant") or "contoso"),
            object_id=document.get("object_id"),
            mailbox_enabled=bool(document.get("mailbox_enabled", True)),
        )
        return web.json_response(
            {
                "address": user.address,
                "display_name": user.display_name,
                "object_id": user.object_id,
                "tenant_id": user.tenant_id,
            },
            status=201,
        )

    async def scenario(self, request: web.Request) -> web.Response:
        """Flip a per-user scenario switch."""
        document = await json_object(request)
        scenario = document.get("scenario")
        if scenario not in SCENARIOS:
            return problem_response(400, f"scenario must be one of {', '.join(SCENARIOS)}")
        try:
            self._state.apply_scenario(request.match_info["address"], str(scenario))
        except UnknownUserError:
            return problem_response(404, "no such user")
        return web.json_response({"address": request.match_info["address"], "scenario": scenario})
