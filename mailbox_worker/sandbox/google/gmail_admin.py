"""The sandbox's Gmail inspection and limits API, JSON under ``/_sandbox/google/``.

* ``GET /_sandbox/google/messages[?user=addr&label=SENT|DRAFT]`` — accepted messages, oldest
  first: ``{"messages": [{id, thread_id, user, label, draft_id, message_id, subject, from, to,
  cc, bcc, size, sha256, upload, client_id, created_at, over_limit}]}`` (``message_id`` is
  the ``Message-ID`` header; ``upload`` how the message came: ``raw``, ``media``,
  ``multipart``, ``resumable``; ``over_limit``: sent past the daily limit, unnoticed as yet);
* ``GET /_sandbox/google/messages/{id}/raw`` — its RFC 822 bytes (``message/rfc822``);
* ``GET /_sandbox/google/users/{address}/limits`` — ``{daily_sending_limit, units_per_minute,
  sending_limit_detection_delay, sent_in_window}``;
* ``POST /_sandbox/google/users/{address}/limits`` — ``{daily_sending_limit?,
  units_per_minute?, sending_limit_detection_delay?}`` (non-negative; the delay in seconds);
  answers as the GET.

Counters, faults and reset are the shared control API (``sandbox.admin``); ``POST
/_sandbox/reset`` forgets messages, drafts and usage but keeps limits. Every operation wraps a
``GmailState`` method, which tests may call directly.
"""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import web

from ..admin import json_object, problem_response
from .gmail_state import GmailMessage, GmailState
from .state import GoogleState, iso_time


def message_summary(gmail: GmailState, message: GmailMessage) -> dict[str, Any]:
    """The inspection API's view of one message."""
    draft = gmail.draft_of_message(message.id)
    return {
        "id": message.id,
        "thread_id": message.thread_id,
        "user": message.user,
        "label": message.label,
        "draft_id": None if draft is None else draft.id,
        "message_id": message.headers.message_id,
        "subject": message.headers.subject,
        "from": message.headers.sender,
        "to": message.headers.to,
        "cc": message.headers.cc,
        "bcc": message.headers.bcc,
        "size": len(message.raw),
        "sha256": hashlib.sha256(message.raw).hexdigest(),
        "upload": message.upload,
        "client_id": message.client_id,
        "created_at": iso_time(message.created_at),
        "over_limit": message.over_limit,
    }


class GmailAdminEndpoints:
    """Handlers for Gmail's part of ``/_sandbox/google/``."""

    def __init__(self, google: GoogleState, gmail: GmailState) -> None:
        self._google = google
        self._gmail = gmail

    def routes(self) -> list[web.RouteDef]:
        """The aiohttp routes these handlers serve."""
        return [
            web.get("/_sandbox/google/messages", self.list_messages),
            web.get("/_sandbox/google/messages/{message_id}/raw", self.raw_message),
            web.get("/_sandbox/google/users/{address}/limits", self.limits),
            web.post("/_sandbox/google/users/{address}/limits", self.set_limits),
        ]

    async def list_messages(self, request: web.Request) -> web.Response:
        """Accepted messages, oldest first."""
        label = request.query.get("label")
        if label not in (None, "SENT", "DRAFT"):
            return problem_response(400, "label must be SENT or DRAFT")
        messages = self._gmail.message_list(request.query.get("user"), label)
        listing = [message_summary(self._gmail, message) for message in messages]
        return web.json_response({"messages": listing})

    async def raw_message(self, request: web.Request) -> web.Response:
        """A message's RFC 822 bytes, as accepted."""
        message = self._gmail.messages.get(request.match_info["message_id"])
        if message is None:
            return problem_response(404, "no such message")
        return web.Response(body=message.raw, content_type="message/rfc822")

    async def limits(self, request: web.Request) -> web.Response:
        """A user's limits and what counts against the daily one now."""
        address = request.match_info["address"]
        if self._google.find_user(address) is None:
            return problem_response(404, "no such user")
        return self._limits_answer(address)

    async def set_limits(self, request: web.Request) -> web.Response:
        """Change a user's daily sending limit or quota units per minute."""
        address = request.match_info["address"]
        if self._google.find_user(address) is None:
            return problem_response(404, "no such user")
        document = await json_object(request)
        counts: dict[str, int] = {}
        for name in ("daily_sending_limit", "units_per_minute"):
            if name in document:
                value = document[name]
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    return problem_response(400, f"{name} must be a non-negative integer")
                counts[name] = value
        delay = document.get("sending_limit_detection_delay")
        if delay is not None and (
            not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0
        ):
            return problem_response(400, "sending_limit_detection_delay must be seconds >= 0")
        self._gmail.set_limits(
            address,
            daily_sending_limit=counts.get("daily_sending_limit"),
            units_per_minute=counts.get("units_per_minute"),
            sending_limit_detection_delay=None if delay is None else float(delay),
        )
        return self._limits_answer(address)

    def _limits_answer(self, address: str) -> web.Response:
        limits = self._gmail.limits_of(address)
        return web.json_response(
            {
                "daily_sending_limit": limits.daily_sending_limit,
                "units_per_minute": limits.units_per_minute,
                "sending_limit_detection_delay": limits.sending_limit_detection_delay,
                "sent_in_window": self._gmail.sent_in_window(address),
            }
        )
