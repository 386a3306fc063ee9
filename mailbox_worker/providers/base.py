"""The port every mail transport implements.

A provider turns one RFC 5322 message into one provider operation (send it, or store it as a
draft) using an access token it is handed. It knows nothing of the database, the queue or how
tokens are obtained; it reports failures only as ``mailbox_worker.errors.DeliveryError``
subclasses, so the worker can decide between retry, hold, fail and "unknown".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

DeliveryMode = Literal["send", "draft"]


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message ready to hand to a provider.

    ``mime`` is the complete RFC 5322 message (CRLF line ends, Bcc header kept so API
    providers deliver to Bcc recipients and strip it). ``message_id`` is its ``Message-ID``
    header, derived from the job id, so any resume can recognise the same message.
    """

    job_id: str
    mime: bytes
    message_id: str


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    """What the provider told us about an accepted message.

    ``provider_message_id`` is the provider's id for the message (Graph draft/message id,
    Gmail message id) when the provider returns one; Graph ``sendMail`` returns none.
    ``provider_draft_id`` is set for drafts (Gmail distinguishes draft and message ids).
    """

    state: Literal["sent", "drafted"]
    provider_message_id: str | None = None
    provider_draft_id: str | None = None
    web_link: str | None = None


class MailProvider(Protocol):
    """A transport for one provider (Microsoft Graph, Gmail API, SMTP)."""

    name: str

    def max_message_bytes(self, mode: DeliveryMode) -> int:
        """Largest RFC 5322 message, in bytes before transport encoding, this transport accepts."""
        ...

    async def send(self, access_token: str, message: OutgoingMessage) -> DeliveryReceipt:
        """Send ``message`` from the mailbox the token belongs to.

        Raises ``Throttled``/``TransientError`` when nothing was sent and a retry is safe,
        ``AccessTokenRejected`` on 401, ``PermanentError`` when retrying cannot help,
        ``ReauthRequired`` when the grant is gone and ``OutcomeUnknown`` when the request
        may have reached the provider (timeout after sending, ambiguous 5xx).
        """
        ...

    async def create_draft(self, access_token: str, message: OutgoingMessage) -> DeliveryReceipt:
        """Store ``message`` as a draft in the mailbox; same error contract as ``send``."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
