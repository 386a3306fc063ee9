"""A typed async client of the mailbox-worker API, for the invoicing app (docs/client.md).

It needs aiohttp and the standard library only, and nothing else of ``mailbox_worker``
(import-linter holds it to that, and no daemon module imports it): an application can vendor
or install it without the daemon.
"""

from mailbox_worker.client.client import MailboxWorkerClient
from mailbox_worker.client.errors import (
    ApiError,
    ClientError,
    OutcomeTimeout,
    RateLimited,
    TransportError,
    Unavailable,
    WebhookVerificationError,
)
from mailbox_worker.client.models import (
    FINAL_STATES,
    NEEDS_A_PERSON,
    Address,
    Attachment,
    BatchItemError,
    BatchItemResult,
    ErrorDetail,
    Job,
    JobEvent,
    JobPage,
    JobRequest,
    JobState,
    Mailbox,
    MailboxConnection,
    MailboxState,
    Message,
    Mode,
    Provider,
    attachment,
)
from mailbox_worker.client.retries import RetryPolicy
from mailbox_worker.client.webhooks import SIGNATURE_HEADER, verify_webhook

__all__ = [
    "FINAL_STATES",
    "NEEDS_A_PERSON",
    "SIGNATURE_HEADER",
    "Address",
    "ApiError",
    "Attachment",
    "BatchItemError",
    "BatchItemResult",
    "ClientError",
    "ErrorDetail",
    "Job",
    "JobEvent",
    "JobPage",
    "JobRequest",
    "JobState",
    "Mailbox",
    "MailboxConnection",
    "MailboxState",
    "MailboxWorkerClient",
    "Message",
    "Mode",
    "OutcomeTimeout",
    "Provider",
    "RateLimited",
    "RetryPolicy",
    "TransportError",
    "Unavailable",
    "WebhookVerificationError",
    "attachment",
    "verify_webhook",
]
