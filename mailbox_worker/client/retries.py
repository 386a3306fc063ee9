"""When to try a request again, and how long to wait first. Pure: no I/O, no clock of its own.

- 429 and 503 are retried whatever the request: the daemon answers them before acting on it.
  Their ``Retry-After`` (seconds, or an HTTP date) is honoured exactly; without one the wait
  is an exponential backoff with jitter.
- A connection error (refused, reset, timed out) is retried only for an idempotent request
  (a GET, or POST /v1/jobs with its idempotency key): the request may have been acted on.
- Nothing else is retried: another 4xx will be answered the same way again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRIED_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """How many times and how long the client retries.

    ``max_retries`` counts the attempts after the first. A ``Retry-After`` longer than
    ``max_retry_after`` is not waited out: the error is raised with it, for the caller to
    decide.
    """

    max_retries: int = 4
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff_base < 0 or self.backoff_cap < 0:
            raise ValueError("retry settings must not be negative")

    def backoff(self, retry: int, random: Callable[[], float]) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first): between half and
        all of ``backoff_base * 2 ** (retry - 1)``, capped at ``backoff_cap``."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** (retry - 1))
        return ceiling / 2 + random() * ceiling / 2


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` in seconds from ``now``: delay-seconds or an HTTP date (RFC 9110
    10.2.3). A date already past means 0; a value that is neither means None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # RFC 9110 dates are GMT; parsedate leaves "-0000" naive
        moment = moment.replace(tzinfo=UTC)
    seconds = (moment - now).total_seconds()
    return max(0.0, math.ceil(seconds)) if math.isfinite(seconds) else None
