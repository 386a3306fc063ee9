"""The port every mail transport implements.

A provider turns one RFC 5322 message into a provider operation (send it, or store it as a
draft) using an access token it is handed; a large message may take several requests (a
draft, uploads, then the send of that draft), reported as they happen to a
``DeliveryProgress`` so that an interrupted delivery can resume without sending twice. It
knows nothing of the database, the queue or how tokens are obtained; it reports failures
only as ``mailbox_worker.errors.DeliveryError`` subclasses, so the worker can decide between
retry, hold, fail and "unknown".
"""

from __future__ import annotations

from collections.abc import Collection
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
    draft_id: str | None = None
    """A draft of this message an earlier attempt stored (``DeliveryProgress.draft_created``)."""
    draft_complete: bool = False
    """That draft holds the whole message (``DeliveryProgress.draft_completed``): send it as
    it is. A draft that is not complete is discarded and the delivery starts over."""


class DeliveryProgress(Protocol):
    """Told by a provider how far a delivery got, each step before the next request leaves.

    A hook may raise to stop the delivery (the caller lost its job, say); the provider lets
    that exception through unchanged.
    """

    async def draft_created(self, draft_id: str) -> None:
        """A draft of the message now exists at the provider: reuse it if the delivery resumes."""
        ...

    async def draft_completed(self, draft_id: str) -> None:
        """The draft holds the whole message (every attachment uploaded)."""
        ...

    async def about_to_send(self) -> None:
        """The next request may deliver the message: from here a failure may be ambiguous.
        Nothing before this call can have delivered it."""
        ...


class Untracked:
    """A ``DeliveryProgress`` that records nothing."""

    async def draft_created(self, draft_id: str) -> None:
        """Nothing to record."""

    async def draft_completed(self, draft_id: str) -> None:
        """Nothing to record."""

    async def about_to_send(self) -> None:
        """Nothing to record."""


UNTRACKED: DeliveryProgress = Untracked()


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

    def max_message_bytes(self, mode: DeliveryMode, capabilities: Collection[str]) -> int:
        """Largest RFC 5322 message, in bytes before transport encoding, this transport accepts
        for a mailbox connected with ``capabilities`` (``send``, ``draft``: what it was granted
        decides which requests it may make)."""
        ...

    async def send(
        self,
        access_token: str,
        message: OutgoingMessage,
        *,
        progress: DeliveryProgress = UNTRACKED,
    ) -> DeliveryReceipt:
        """Send ``message`` from the mailbox the token belongs to, reporting to ``progress``
        (``about_to_send`` before any request that may deliver it).

        Raises ``Throttled``/``TransientError`` when nothing was sent and a retry is safe,
        ``AccessTokenRejected`` on 401, ``PermanentError`` when retrying cannot help,
        ``ReauthRequired`` when the grant is gone and ``OutcomeUnknown`` when the request
        may have reached the provider (timeout after sending, ambiguous 5xx).
        """
        ...

    async def create_draft(
        self,
        access_token: str,
        message: OutgoingMessage,
        *,
        progress: DeliveryProgress = UNTRACKED,
    ) -> DeliveryReceipt:
        """Store ``message`` as a draft in the mailbox; same error contract as ``send``.
        ``about_to_send`` is never called: a draft delivers nothing to anyone."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
