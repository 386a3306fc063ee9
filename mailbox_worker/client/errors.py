"""The client's own exception tree.

The client is a separate piece of the package, importable without the daemon (it uses nothing
of ``mailbox_worker`` outside ``mailbox_worker.client``), so it cannot share the daemon's tree
in ``mailbox_worker/errors.py``; this one mirrors the API's answers instead.

    ClientError                     every error the client raises on purpose
    ├── TransportError              no HTTP answer (refused, reset, timed out) after the retries
    │                               allowed; the request may or may not have been acted on
    ├── ApiError                    the API answered an error: ``status``, ``code``, ``message``,
    │   │                           ``details``, ``request_id`` (from ``X-Request-Id``)
    │   ├── RateLimited             429 still answered after the retries (``retry_after``)
    │   └── Unavailable             503 still answered after the retries (``retry_after``)
    ├── OutcomeTimeout              ``wait_for_outcome`` gave up before a final state (``job``)
    └── WebhookVerificationError    a webhook's signature or timestamp does not hold

Messages never contain the API key: the client never puts it anywhere but the
``Authorization`` header.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailbox_worker.client.models import ErrorDetail, Job


class ClientError(Exception):
    """Base of every error the client raises on purpose."""


class TransportError(ClientError):
    """The daemon could not be reached, or did not answer in time, on every attempt."""


class ApiError(ClientError):
    """The API answered with an error status and (normally) its JSON error body.

    ``code`` is the API's stable machine code (``invalid_request``, ``not_found``, …); when
    the answer was not the API's JSON (a proxy's page, say) it is ``unexpected_response``.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Sequence[ErrorDetail] = (),
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: tuple[ErrorDetail, ...] = tuple(details)
        self.request_id = request_id
        self.retry_after = retry_after
        """Seconds the API asked to wait (``Retry-After``), when it said."""


class RateLimited(ApiError):
    """429: too many requests, still after the retries the client was allowed."""


class Unavailable(ApiError):
    """503: the daemon cannot serve now (its database, its connection limit)."""


class OutcomeTimeout(ClientError):
    """The job did not reach a final state within the time ``wait_for_outcome`` was given."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job['id']} is still {job['state']}")
        self.job = job


class WebhookVerificationError(ClientError):
    """A webhook delivery does not prove it comes from the daemon, or is too old or too new."""


ERRORS_BY_STATUS: Mapping[int, type[ApiError]] = {429: RateLimited, 503: Unavailable}
