"""Delivering outbox events to the invoicing app's callback URL (docs/webhooks.md).

Each event is POSTed as the JSON envelope ``{"id", "type", "account_id", "created_at",
"data"}`` (``id`` is the event's ``evt_…`` id) with the headers

- ``X-Mailbox-Worker-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 under callbacks.secret
  of "<t>.<body>">`` (``events.signing``; ``t`` is the time of this attempt, so a retry is
  signed afresh and a receiver can refuse replays older than ``signing.TOLERANCE``);
- ``X-Mailbox-Worker-Event-Id`` and ``X-Mailbox-Worker-Event-Type``, the envelope's ``id``
  and ``type``, so that a receiver can de-duplicate before parsing.

A 2xx answer acknowledges it; anything else (or no answer within ``callbacks.timeout``) is
retried with exponential backoff: ``callbacks.retry_initial`` seconds, doubled after each
failed attempt, at most ``LONGEST_WAIT``. Events are leased before they are sent
(``Outbox.claim``), so several daemons on one database POST each event once when nothing
fails — at least once in general: a daemon that dies between the POST and recording the
answer leaves it to be sent again after its lease. One ordering key's events are POSTed one
at a time, in order (``events.outbox``). The callback URL is the only place events go
(docs/privacy.md PP-5).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from mailbox_worker.clock import Clock, utcnow
from mailbox_worker.db.models import OutboxEvent
from mailbox_worker.errors import PolicyViolation
from mailbox_worker.events.outbox import Outbox
from mailbox_worker.events.signing import (
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    sign,
)
from mailbox_worker.periodic import Periodic, exponential_backoff
from mailbox_worker.telemetry import Telemetry


@dataclass(frozen=True)
class CallbackSettings:
    """The ``[callbacks]`` settings section (see ``config/mailbox-worker.toml``)."""

    url: str = ""
    secret: str = field(default="", repr=False)
    timeout: float = 10.0
    poll_interval: float = 2.0
    retry_initial: float = 5.0


log = logging.getLogger(__name__)

LONGEST_WAIT = dt.timedelta(hours=1)
BATCH = 50
"""Events leased at a time; they are POSTed one after the other, in id order."""
LEASE_MARGIN = dt.timedelta(minutes=1)


def envelope(event: OutboxEvent) -> bytes:
    """The body POSTed for ``event``: compact JSON, the same bytes on every attempt."""
    document = {
        "id": event.public_id,
        "type": event.kind,
        "account_id": event.account_id,
        "created_at": event.created_at.isoformat().replace("+00:00", "Z"),
        "data": event.payload,
    }
    return json.dumps(document, separators=(",", ":")).encode()


class CallbackDispatcher:
    """Posts due outbox events to ``settings.url``.

    ``tracing`` is given to each HTTP session it opens: the composition root passes the
    egress gate's hooks (``providers.egress_gate.egress_tracing``), so that a callback — or a
    redirect it answers with — to a host off the allow-list raises ``PolicyViolation`` before
    a connection is made; the event then waits for its next attempt (docs/privacy.md PP-5).
    ``telemetry``, when given, counts each POST (``Telemetry.callback_delivery``).
    ``clock`` gives the ``t`` of each signature: the wall clock, which receivers compare
    with theirs.
    """

    def __init__(
        self,
        outbox: Outbox,
        settings: CallbackSettings,
        telemetry: Telemetry | None = None,
        *,
        tracing: Sequence[aiohttp.TraceConfig] = (),
        clock: Clock = utcnow,
    ) -> None:
        self._outbox = outbox
        self._clock = clock
        self._settings = settings
        self._telemetry = telemetry
        self._tracing = list(tracing)

    async def deliver_due(self) -> int:
        """Lease a batch of due events and send each once; returns how many were
        acknowledged. The lease outlasts the batch even if every POST times out."""
        lease = LEASE_MARGIN + BATCH * dt.timedelta(seconds=self._settings.timeout)
        due = await self._outbox.claim(BATCH, lease)
        if not due:
            return 0
        delivered = 0
        timeout = aiohttp.ClientTimeout(total=self._settings.timeout)
        async with aiohttp.ClientSession(timeout=timeout, trace_configs=self._tracing) as http:
            for event in due:
                delivered += await self._deliver(http, event)
        return delivered

    async def _deliver(self, http: aiohttp.ClientSession, event: OutboxEvent) -> int:
        body = envelope(event)
        signed_at = int(self._clock().timestamp())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(body, signed_at, self._settings.secret),
            EVENT_ID_HEADER: event.public_id,
            EVENT_TYPE_HEADER: event.kind,
        }
        try:
            async with http.post(self._settings.url, data=body, headers=headers) as answer:
                ok = 200 <= answer.status < 300
            result = "delivered" if ok else "rejected"
        except (aiohttp.ClientError, TimeoutError, PolicyViolation) as error:
            # A refused destination was reported by the gate; retrying later is harmless.
            log.warning("callback for event %s failed: %s", event.public_id, type(error).__name__)
            ok, result = False, "unreachable"
        if self._telemetry is not None:
            self._telemetry.callback_delivery(result)
        if ok:
            await self._outbox.delivered(event.id)
            return 1
        attempts = event.attempts + 1
        wait = exponential_backoff(
            dt.timedelta(seconds=self._settings.retry_initial), event.attempts, LONGEST_WAIT
        )
        await self._outbox.retry_later(event.id, attempts, wait)
        return 0

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver due events every ``callbacks.poll_interval`` seconds until ``stop``."""
        loop = Periodic(
            "callback delivery", self.deliver_due, self._settings.poll_interval, logger=log
        )
        await loop.run(stop)
