"""What the Gmail simulator remembers: messages and drafts per user, limits, usage, uploads.

Reached as ``SandboxState.gmail``; ``gmail`` (the API) and ``gmail_admin`` (the inspection and
limits API) only read and change this object, and tests may call the same methods.

Model (docs/providers.md D2, D5). A message is what the API accepted: its RFC 822 bytes, its
``Message-ID`` header and its Gmail ids, labelled ``SENT`` or ``DRAFT``. A draft points at its
message; ``drafts.send`` turns that message into a ``SENT`` one and the draft is gone. Each user
has limits (quota units per minute, messages per rolling day), settable at any time; usage is
recorded per (client, user) for units — Google's per-user quota belongs to a project — and per
user for sending, which Google limits per account whatever the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..clock import SandboxClock
from .gmail_messages import Headers, new_draft_id, new_message_id
from .gmail_quota import (
    DAILY_SENDING_LIMIT,
    SENDING_WINDOW,
    UNITS_PER_USER_PER_MINUTE,
    UNITS_WINDOW,
    RollingWindow,
)

SENT, DRAFT = "SENT", "DRAFT"


@dataclass
class GmailMessage:
    """An accepted message. ``upload``: how it came (``raw``, ``media``, ``multipart`` or
    ``resumable``); ``user``: the mailbox's address, lower case; ``over_limit``: sent past the
    daily limit before Google noticed (see ``GmailLimits``)."""

    id: str
    thread_id: str
    user: str
    client_id: str
    label: str
    raw: bytes
    headers: Headers
    upload: str
    created_at: float
    over_limit: bool = False

    def resource(self) -> dict[str, Any]:
        """The ``Message`` the API answers with (docs/providers.md D2)."""
        return {"id": self.id, "threadId": self.thread_id, "labelIds": [self.label]}


@dataclass
class GmailDraft:
    """A draft and the id of its message."""

    id: str
    user: str
    message_id: str


@dataclass
class GmailLimits:
    """A user's limits (docs/providers.md D5 defaults).

    ``sending_limit_detection_delay``: Google notices a passed sending limit only minutes later
    (docs/providers.md D4): for that many seconds after the first message over the limit, sends
    still succeed (and count); the length is not documented, so it is 0 unless set.
    """

    daily_sending_limit: int = DAILY_SENDING_LIMIT
    units_per_minute: int = UNITS_PER_USER_PER_MINUTE
    sending_limit_detection_delay: float = 0.0


@dataclass(frozen=True)
class SendAdmission:
    """Whether a message may be sent: ``refused_until`` is None if so (with ``over_limit`` when
    it goes out past the limit, unnoticed as yet), else when the next one would fit."""

    refused_until: float | None
    over_limit: bool = False


@dataclass
class UploadSession:
    """A resumable upload between its first POST and its last PUT (docs/providers.md D3)."""

    id: str
    operation: str
    user: str
    client_id: str
    metadata: Mapping[str, Any]
    declared_length: int | None
    received: bytearray = field(default_factory=bytearray)


@dataclass
class GmailState:
    """The Gmail half of Google's memory. Not thread-safe: use it from the event loop."""

    clock: SandboxClock = field(default_factory=SandboxClock)  # SandboxState passes its own
    messages: dict[str, GmailMessage] = field(default_factory=dict)
    drafts: dict[str, GmailDraft] = field(default_factory=dict)
    limits: dict[str, GmailLimits] = field(default_factory=dict)
    unit_windows: dict[tuple[str, str], RollingWindow] = field(default_factory=dict)
    sending_windows: dict[str, RollingWindow] = field(default_factory=dict)
    uploads: dict[str, UploadSession] = field(default_factory=dict)
    over_limit_since: dict[str, float] = field(default_factory=dict)

    # -- limits ------------------------------------------------------------------------------

    def limits_of(self, user: str) -> GmailLimits:
        """The user's limits (the defaults until changed)."""
        return self.limits.setdefault(user.lower(), GmailLimits())

    def set_limits(
        self,
        user: str,
        daily_sending_limit: int | None = None,
        units_per_minute: int | None = None,
        sending_limit_detection_delay: float | None = None,
    ) -> GmailLimits:
        """Change a user's limits; what was already used keeps counting against the new ones."""
        limits = self.limits_of(user)
        for value in (daily_sending_limit, units_per_minute, sending_limit_detection_delay):
            if value is not None and value < 0:
                raise ValueError("limits must not be negative")
        if daily_sending_limit is not None:
            limits.daily_sending_limit = daily_sending_limit
        if units_per_minute is not None:
            limits.units_per_minute = units_per_minute
        if sending_limit_detection_delay is not None:
            limits.sending_limit_detection_delay = sending_limit_detection_delay
        return limits

    def charge_units(self, client_id: str, user: str, units: int) -> float | None:
        """Spend quota units; None if within the per-minute limit, else when they would fit."""
        window = self.unit_windows.setdefault(
            (client_id, user.lower()), RollingWindow(UNITS_WINDOW)
        )
        return window.admit(self.clock.time(), units, self.limits_of(user).units_per_minute)

    def admit_send(self, user: str) -> SendAdmission:
        """Count one message sent, unless the daily limit refuses it (from the moment the limit
        was first passed plus the detection delay on)."""
        key, now, limits = user.lower(), self.clock.time(), self.limits_of(user)
        window = self.sending_windows.setdefault(key, RollingWindow(SENDING_WINDOW))
        until = window.admit(now, 1, limits.daily_sending_limit)
        if until is None:
            self.over_limit_since.pop(key, None)
            return SendAdmission(None)
        since = self.over_limit_since.setdefault(key, now)
        if now < since + limits.sending_limit_detection_delay:
            window.record(now, 1)
            return SendAdmission(None, over_limit=True)
        return SendAdmission(until, over_limit=True)

    def sent_in_window(self, user: str) -> int:
        """Messages sent by ``user`` that still count against the daily limit."""
        window = self.sending_windows.get(user.lower())
        return 0 if window is None else window.used(self.clock.time())

    # -- messages and drafts -------------------------------------------------------------------

    def store(
        self,
        user: str,
        client_id: str,
        raw: bytes,
        headers: Headers,
        label: str,
        upload: str,
        thread_id: str | None = None,
        over_limit: bool = False,
    ) -> GmailMessage:
        """Keep an accepted message (a new thread unless ``thread_id`` is given)."""
        now = self.clock.time()
        identifier = new_message_id(now)
        message = GmailMessage(
            identifier,
            thread_id or identifier,
            user.lower(),
            client_id,
            label,
            raw,
            headers,
            upload,
            now,
            over_limit,
        )
        self.messages[identifier] = message
        return message

    def create_draft(self, message: GmailMessage) -> GmailDraft:
        """Make ``message`` (labelled ``DRAFT``) a draft."""
        draft = GmailDraft(new_draft_id(), message.user, message.id)
        self.drafts[draft.id] = draft
        return draft

    def find_draft(self, user: str, identifier: str) -> GmailDraft | None:
        """A draft of ``user`` by id (another user's drafts are not found)."""
        draft = self.drafts.get(identifier)
        return draft if draft is not None and draft.user == user.lower() else None

    def send_draft(self, draft: GmailDraft) -> GmailMessage:
        """The draft's message becomes a sent one; the draft is gone."""
        message = self.messages[draft.message_id]
        message.label = SENT
        del self.drafts[draft.id]
        return message

    def message_list(self, user: str | None = None, label: str | None = None) -> list[GmailMessage]:
        """Stored messages, oldest first, optionally of one user and one label."""
        return [
            message
            for message in sorted(self.messages.values(), key=lambda item: item.created_at)
            if (user is None or message.user == user.lower())
            and (label is None or message.label == label)
        ]

    def draft_of_message(self, identifier: str) -> GmailDraft | None:
        """The live draft holding message ``identifier``, if any."""
        return next(
            (draft for draft in self.drafts.values() if draft.message_id == identifier), None
        )

    # -- reset ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget messages, drafts, usage and uploads; limits stay, as other settings do."""
        self.messages.clear()
        self.drafts.clear()
        self.unit_windows.clear()
        self.sending_windows.clear()
        self.uploads.clear()
        self.over_limit_since.clear()
