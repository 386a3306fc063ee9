"""Every type of event the daemon sends to the invoicing app (docs/webhooks.md).

``outbox_row`` refuses any other type, so this list is complete by construction: a new event
is added here first, and described in the OpenAPI document's ``webhooks`` section (a test
checks that each of these has its entry there).
"""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    JOB_SENT = "job.sent"
    JOB_DRAFTED = "job.drafted"
    JOB_FAILED = "job.failed"
    JOB_UNKNOWN = "job.unknown"
    JOB_CANCELLED = "job.cancelled"
    JOB_HELD = "job.held"
    JOB_SETTLED = "job.settled"
    MAILBOX_CONNECTED = "mailbox.connected"
    MAILBOX_REAUTH_REQUIRED = "mailbox.reauth_required"
    MAILBOX_DISCONNECTED = "mailbox.disconnected"


EVENT_ID_PREFIX = "evt"
"""Event ids are ``evt_<32 hex>``, made like every other id (``clock.new_id``)."""
