"""The API's documents as typed dictionaries, as ``mailbox_worker/api/openapi.json`` draws them.

Answers are the decoded JSON itself (the client does not copy them into other objects), so a
field the daemon adds later is still there to read; these types say what is guaranteed.
"""

from __future__ import annotations

import base64
from typing import Literal, NotRequired, TypedDict

JobState = Literal["queued", "running", "held", "sent", "drafted", "failed", "cancelled", "unknown"]
MailboxState = Literal["pending_consent", "connected", "reauth_required", "disconnected"]
Mode = Literal["send", "draft"]
Provider = Literal["microsoft", "google"]

FINAL_STATES: frozenset[str] = frozenset({"sent", "drafted", "failed", "cancelled", "unknown"})
"""States a job never leaves by itself (docs/architecture.md#job-states)."""

NEEDS_A_PERSON: frozenset[str] = frozenset({"held", "unknown"})
"""``held`` waits for the mailbox's admin to reconnect; ``unknown`` waits for someone to
resolve, retry or cancel it. ``wait_for_outcome`` returns on either rather than wait on."""


class Address(TypedDict):
    address: str
    name: NotRequired[str]


class Attachment(TypedDict):
    filename: str
    content_type: str
    content_base64: str


# ``from`` is a Python keyword, hence the functional form.
Message = TypedDict(
    "Message",
    {
        "from": NotRequired[Address],
        "to": list[Address],
        "cc": NotRequired[list[Address]],
        "bcc": NotRequired[list[Address]],
        "reply_to": NotRequired[list[Address]],
        "subject": str,
        "text": NotRequired[str],
        "html": NotRequired[str],
        "attachments": NotRequired[list[Attachment]],
    },
)


class JobError(TypedDict):
    code: str
    message: str


class ProviderIds(TypedDict):
    message_id: str | None
    draft_id: str | None
    web_link: str | None


class JobEvent(TypedDict):
    at: str
    kind: str
    from_state: JobState | None
    to_state: JobState | None
    code: str | None
    provider_status: int | None


class Job(TypedDict):
    id: str
    mailbox_id: str
    mode: Mode
    state: JobState
    reference: str | None
    message_id: str
    attempts: int
    created_at: str
    updated_at: str
    finished_at: str | None
    deadline: str | None
    send_at: str | None
    priority: int
    last_error: JobError | None
    provider: ProviderIds
    events: NotRequired[list[JobEvent]]
    """Present in ``get_job``'s answer: every state change and attempt."""


class JobPage(TypedDict):
    """A page of ``GET /v1/jobs``: newest first; ``next_cursor`` is None on the last page."""

    items: list[Job]
    next_cursor: str | None


class JobRequest(TypedDict):
    """One item of ``enqueue_batch``: what ``enqueue`` takes, as the API's JSON."""

    mailbox_id: str
    mode: Mode
    message: Message
    reference: NotRequired[str]
    deadline: NotRequired[str]
    send_at: NotRequired[str]
    priority: NotRequired[int]
    idempotency_key: NotRequired[str]


class BatchItemError(TypedDict):
    code: str
    message: str
    details: NotRequired[list[ErrorDetail]]


class BatchItemResult(TypedDict):
    """The answer to one item of ``enqueue_batch``: ``created`` or ``existing`` (an
    idempotent replay) with ``job``, or ``error`` with ``error`` (nothing enqueued)."""

    index: int
    status: Literal["created", "existing", "error"]
    job: NotRequired[Job]
    error: NotRequired[BatchItemError]


class MailboxLimits(TypedDict, total=False):
    max_concurrency: int | None
    rate_per_minute: int | None
    daily_recipient_cap: int | None


class Mailbox(TypedDict):
    id: str
    provider: Provider
    capabilities: list[Mode]
    state: MailboxState
    state_reason: str | None
    address: str | None
    granted_scopes: list[str]
    created_at: str
    updated_at: str
    limits: MailboxLimits
    paused_until: str | None


class MailboxConnection(TypedDict):
    mailbox: Mailbox
    authorization_url: str
    """The consent page to send the mailbox's admin to; single use, expires."""


class ErrorDetail(TypedDict):
    field: str
    code: str
    message: str


def attachment(filename: str, content: bytes, content_type: str = "application/pdf") -> Attachment:
    """An attachment of ``content``, encoded as the API takes it (padded base64, one line)."""
    return {
        "filename": filename,
        "content_type": content_type,
        "content_base64": base64.b64encode(content).decode("ascii"),
    }
