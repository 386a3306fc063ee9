"""The job and mailbox states, defined once (docs/architecture.md#mailbox-states and
docs/architecture.md#job-states).

Each value is the string stored in the database and shown in the API (the document's
``JobState`` and ``MailboxState``); a ``StrEnum`` member compares equal to that string, so
rows read back as plain strings compare with the members directly. This module imports
nothing of ours: the database, the engine and the API all name states through it.
"""

from __future__ import annotations

from enum import StrEnum


class MailboxState(StrEnum):
    """``pending_consent → connected ⇄ reauth_required → disconnected`` (terminal)."""

    PENDING_CONSENT = "pending_consent"
    CONNECTED = "connected"
    REAUTH_REQUIRED = "reauth_required"
    DISCONNECTED = "disconnected"


RECONNECTABLE: frozenset[MailboxState] = frozenset(
    {MailboxState.PENDING_CONSENT, MailboxState.REAUTH_REQUIRED}
)
"""The states in which a mailbox's admin may start a consent again."""


class JobState(StrEnum):
    """``queued → running → sent | drafted``; ``running → queued | failed | unknown``;
    ``queued|running → held → queued``; ``queued|held → cancelled``."""

    QUEUED = "queued"
    RUNNING = "running"
    HELD = "held"
    SENT = "sent"
    DRAFTED = "drafted"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


TERMINAL: frozenset[JobState] = frozenset(
    {JobState.SENT, JobState.DRAFTED, JobState.FAILED, JobState.CANCELLED, JobState.UNKNOWN}
)
"""The states a job never leaves."""

CANCELLABLE: frozenset[JobState] = frozenset({JobState.QUEUED, JobState.HELD})
"""The states from which the API, the CLI or a disconnect may cancel a job."""
