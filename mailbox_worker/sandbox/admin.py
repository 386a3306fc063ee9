"""The sandbox's own inspection and control API, JSON under ``/_sandbox/``.

* ``GET /_sandbox/messages[?mailbox=addr&folder=sent|drafts]`` — stored messages;
* ``GET /_sandbox/messages/{id}/raw`` — the RFC 822 bytes (``message/rfc822``);
* ``GET /_sandbox/messages/{id}/attachments/{index}`` — one attachment's bytes;
* ``GET /_sandbox/counters`` — calls per operation;
* ``POST /_sandbox/clients`` — ``{client_id, client_secret, redirect_uris, name}``;
* ``POST /_sandbox/users`` — ``{address, display_name?, tenant?, object_id?, mailbox_enabled?}``;
* ``POST /_sandbox/users/{address}/scenario`` — ``{"scenario": ...}`` (see ``state.SCENARIOS``);
* ``POST /_sandbox/faults`` / ``DELETE /_sandbox/faults`` — queue / clear faults;
* ``POST /_sandbox/settings`` — ``{access_token_lifetime?, throttle_retry_after?}``;
* ``POST /_sandbox/reset`` — forget messages, counters and faults.

The Google control API (``/_sandbox/google/…``) lives in ``admin_google``.

Every operation is a thin wrapper over a ``SandboxState`` method, which tests may call directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .clients import Client
from .state import SCENARIOS, SandboxState, StoredMessage, UnknownUserError


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


def problem_response(status: int, message: str) -> web.Response:
    """A control-API error: ``{"error": message}`` with ``status``."""
    return web.json_response({"error": message}, status=status)


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 answer."""
    try:
        document = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as problem:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}),
            content_type="application/json",
        ) from problem
    if not isinstance(document, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}),
            content_type="application/json",
        )
    return document


async def register_client(
    request: web.Request,
    register: Callable[[str, str | None, list[str], str | None], Client],
) -> web.Response:
    """``POST .../clients`` for either provider: validate, ``register``, answer 201."""
    document = await json_object(request)
    client_id, redirect_uris = document.get("client_id"), document.get("redirect_uris", [])
    secret, name = document.get("client_secret"), document.get("name")
    if not isinstance(client_id, str) or not client_id:
        return problem_response(400, "client_id is required")
    uris_ok = isinstance(redirect_uris, list) and all(isinstance(uri, str) for uri in redirect_uris)
    if not uris_ok:
        return problem_response(400, "redirect_uris must be a list of strings")
    if not (secret is None or isinstance(secret, str)) or not (
        name is None or isinstance(name, str)
    ):
        return problem_response(400, "client_secret and name must be strings")
    client = register(client_id, secret, redirect_uris, name)
    return web.json_response(
        {"client_id": client.client_id, "redirect_uris": client.redirect_uris, "name": client.name},
        status=201,
    )


class AdminEndpoints:
    """Handlers for ``/_sandbox/``."""

    def __init__(self, state: SandboxState) -> None:
        self._state = state

    def routes(self) -> list[web.RouteDef]:
        """The aiohttp routes these handlers serve."""
        return [
            web.get("/_sandbox/messages", self.list_messages),
            web.get("/_sandbox/messages/{message_id}/raw", self.raw_message),
            web.get("/_sandbox/messages/{message_id}/attachments/{index}", self.attachment),
            web.get("/_sandbox/counters", self.counters),
            web.post("/_sandbox/clients", self.register_client),
            web.post("/_sandbox/users", self.add_user),
            web.post("/_sandbox/users/{address}/scenario", self.scenario),
            web.post("/_sandbox/faults", self.queue_fault),
            web.delete("/_sandbox/faults", self.clear_faults),
            web.post("/_sandbox/settings", self.settings),
            web.post("/_sandbox/reset", self.reset),
        ]

    async def list_messages(self, request: web.Request) -> web.Response:
        """Stored messages, oldest first."""
        folder = request.query.get("folder")
        if folder not in (None, "sent", "drafts"):
            return problem_response(400, "folder must be 'sent' or 'drafts'")
        messages = self._state.messages(request.query.get("mailbox"), folder)
        return web.json_response({"messages": [message_summary(item) for item in messages]})

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

    async def counters(self, request: web.Request) -> web.Response:
        """Calls per operation."""
        return web.json_response({"counters": self._state.counters()})

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

    async def queue_fault(self, request: web.Request) -> web.Response:
        """Queue a fault for an operation."""
        document = await json_object(request)
        try:
            retry_after = document.get("retry_after")
            fault = self._state.queue_fault(
                operation=str(document["operation"]),
                kind=str(document["kind"]),
                status=int(document.get("status", 503)),
                retry_after=None if retry_after is None else int(retry_after),
                delay=float(document.get("delay", 0.0)),
                times=int(document.get("times", 1)),
            )
        except (KeyError, TypeError, ValueError) as problem:
            return problem_response(400, f"invalid fault: {problem}")
        return web.json_response(
            {
                "operation": fault.operation,
                "kind": fault.kind,
                "status": fault.status,
                "retry_after": fault.retry_after,
                "delay": fault.delay,
                "times": fault.times,
            },
            status=201,
        )

    async def clear_faults(self, request: web.Request) -> web.Response:
        """Forget all queued faults."""
        self._state.clear_faults()
        return web.json_response({"faults": []})

    async def settings(self, request: web.Request) -> web.Response:
        """Change the access-token lifetime or the Retry-After of throttled answers."""
        document = await json_object(request)
        try:
            if "access_token_lifetime" in document:
                self._state.access_token_lifetime = max(1, int(document["access_token_lifetime"]))
            if "throttle_retry_after" in document:
                self._state.throttle_retry_after = max(0, int(document["throttle_retry_after"]))
        except (TypeError, ValueError):
            return problem_response(400, "settings must be integers")
        return web.json_response(
            {
                "access_token_lifetime": self._state.access_token_lifetime,
                "throttle_retry_after": self._state.throttle_retry_after,
            }
        )

    async def reset(self, request: web.Request) -> web.Response:
        """Forget messages, counters and faults."""
        self._state.reset()
        return web.json_response({"reset": True})
