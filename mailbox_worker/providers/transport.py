"""HTTP plumbing shared by the API providers (Microsoft Graph, Gmail).

Three things every provider that speaks HTTP through aiohttp needs, kept free of any one
provider's error format:

- ``parse_retry_after``: the ``Retry-After`` header (seconds or HTTP-date) as seconds to wait;
- ``RequestProgress`` + ``progress_tracing``: whether a failed request had begun to be written
  to the connection, observed through an aiohttp trace hook, so that a failure before the first
  byte left (nothing can have been processed) is told apart from one after it (it may have been);
- ``transport_error``: an aiohttp / timeout exception turned into the ``DeliveryError`` the queue
  acts on — ``TransientError`` (code ``network``) when nothing was sent, ``OutcomeUnknown``
  (``timeout`` or ``connection_lost``) when the request may have reached the provider.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import SimpleNamespace
from typing import Final

import aiohttp

from mailbox_worker.errors import DeliveryError, OutcomeUnknown, TransientError
from mailbox_worker.providers.egress_gate import EgressGate, egress_tracing

MAX_CONNECTIONS: Final = 64
"""Connections one provider session keeps open at most (all to the same API host)."""

_DELAY_SECONDS = re.compile(r"\d{1,10}(?:\.\d{1,6})?")


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name`` in ``headers``, compared case-insensitively, or ``None``."""
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait according to a ``Retry-After`` value (RFC 9110 §10.2.3).

    Accepts delay-seconds (``"120"``; a decimal fraction is tolerated) and an HTTP-date, which
    is measured from ``now`` (default: the current UTC time) and never yields less than 0.
    Returns ``None`` when the header is missing or unreadable, so the caller uses its own backoff.
    """
    if value is None:
        return None
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # "-0000" and obsolete forms: HTTP-dates are always UTC
        moment = moment.replace(tzinfo=dt.UTC)
    reference = now if now is not None else dt.datetime.now(dt.UTC)
    return max(0.0, (moment - reference).total_seconds())


@dataclass
class RequestProgress:
    """How far one request got; pass it as ``trace_request_ctx`` of an aiohttp request.

    ``written`` is ``None`` when nothing is known (the session has no ``progress_tracing``
    hook), ``False`` until aiohttp starts writing the request, ``True`` from then on.
    """

    written: bool | None = None

    @classmethod
    def for_session(cls, session: aiohttp.ClientSession) -> RequestProgress:
        """A fresh tracker; it can only learn something if ``session`` has the hook."""
        traced = any(isinstance(config, _ProgressTracing) for config in session.trace_configs)
        return cls(written=False if traced else None)


class _ProgressTracing(aiohttp.TraceConfig):
    pass


async def _on_request_headers_sent(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceRequestHeadersSentParams,
) -> None:
    progress = getattr(context, "trace_request_ctx", None)
    if isinstance(progress, RequestProgress):
        progress.written = True


def progress_tracing() -> aiohttp.TraceConfig:
    """A trace hook that feeds ``RequestProgress``; give it to every provider session."""
    tracing = _ProgressTracing()
    tracing.on_request_headers_sent.append(_on_request_headers_sent)
    return tracing


def create_session(
    timeout: aiohttp.ClientTimeout, egress: EgressGate | None = None
) -> aiohttp.ClientSession:
    """A client session with bounded connections, the ``progress_tracing`` hook and, given
    ``egress``, the egress gate's hooks (docs/privacy.md PP-5): a request or redirect to a
    destination it refuses raises ``PolicyViolation`` before a connection is made.

    Must be called inside the running event loop that will use it.
    """
    connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, limit_per_host=MAX_CONNECTIONS)
    tracing = [progress_tracing()]
    if egress is not None:
        tracing.append(egress_tracing(egress))
    return aiohttp.ClientSession(connector=connector, timeout=timeout, trace_configs=tracing)


TRANSPORT_ERRORS: Final = (aiohttp.ClientError, OSError)
"""What an aiohttp request can raise for network reasons (``TimeoutError`` is an ``OSError``)."""


def transport_error(error: BaseException, progress: RequestProgress) -> DeliveryError:
    """Classify a network failure of one request.

    The connection could not be established (refused, DNS, TLS handshake, connect timeout), or
    the trace shows the request was never written → ``TransientError`` ``network``: nothing was
    sent, a retry is safe. Otherwise the provider may have received and processed the request:
    a timeout → ``OutcomeUnknown`` ``timeout``; a reset, a disconnect or a truncated answer →
    ``OutcomeUnknown`` ``connection_lost``. The message names the exception class only.
    """
    kind = type(error).__name__
    connect_failed = isinstance(
        error, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError
    )
    if connect_failed or progress.written is False:
        return TransientError(f"request not sent: {kind}", code="network")
    if isinstance(error, TimeoutError):
        return OutcomeUnknown(
            f"no answer in time after the request was sent: {kind}", code="timeout"
        )
    return OutcomeUnknown(
        f"connection lost after the request was sent: {kind}", code="connection_lost"
    )
