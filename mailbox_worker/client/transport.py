"""One HTTP exchange with the daemon, retried as ``retries.py`` decides.

The only module of the client that speaks HTTP: it owns (or borrows) the aiohttp session,
adds the API key, decodes JSON answers and turns error answers into ``ApiError``. The waits
go through an injected ``sleep`` and the dates through an injected ``now`` so that tests
observe them without waiting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random as random_module
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp

from mailbox_worker.client.errors import ERRORS_BY_STATUS, ApiError, TransportError
from mailbox_worker.client.models import ErrorDetail
from mailbox_worker.client.retries import RETRIED_STATUSES, RetryPolicy, parse_retry_after

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
USER_AGENT = "mailbox-worker-client/1"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Transport:
    """Sends requests to ``base_url`` with ``Authorization: Bearer <api_key>``.

    A session passed in is used and left open; otherwise the transport opens its own on
    first use and ``close`` closes it.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        session: aiohttp.ClientSession | None,
        timeout: float,
        ssl: ssl_module.SSLContext | bool,
        policy: RetryPolicy,
        sleep: Sleep = asyncio.sleep,
        random: Callable[[], float] = random_module.random,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl = ssl
        self._policy = policy
        self._sleep = sleep
        self._random = random
        self._now = now

    @property
    def base_url(self) -> str:
        return self._base_url

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or (self._owns_session and self._session.closed):
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    async def close(self) -> None:
        """Closes the session if the transport opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool,
    ) -> Any:
        """The decoded JSON of a 2xx answer (None if empty).

        Raises ``ApiError`` (or ``RateLimited`` / ``Unavailable``) for an error answer and
        ``TransportError`` when no answer came. The same ``headers`` (the idempotency key
        among them) go with every attempt.
        """
        session = self._open()
        url = self._base_url + path
        sent_headers = {**self._headers, **(headers or {})}
        retry = 0
        while True:
            try:
                async with session.request(
                    method,
                    url,
                    json=body,
                    headers=sent_headers,
                    ssl=self._ssl,
                    timeout=self._timeout,
                ) as response:
                    raw = await response.read()
                    status = response.status
                    request_id = response.headers.get("X-Request-Id")
                    retry_after_header = response.headers.get("Retry-After")
            except (
                aiohttp.ClientConnectionError,
                aiohttp.ClientPayloadError,
                TimeoutError,
            ) as error:
                if not idempotent or retry >= self._policy.max_retries:
                    raise TransportError(
                        f"{method} {path}: no answer ({type(error).__name__})"
                    ) from error
                retry += 1
                wait = self._policy.backoff(retry, self._random)
                log.info("%s %s: no answer, retry %d in %.1fs", method, path, retry, wait)
                await self._sleep(wait)
                continue
            if status < 400:
                return _decode_success(status, raw, request_id)
            retry_after = parse_retry_after(retry_after_header, self._now())
            if (
                status in RETRIED_STATUSES
                and retry < self._policy.max_retries
                and (retry_after is None or retry_after <= self._policy.max_retry_after)
            ):
                retry += 1
                wait = (
                    retry_after
                    if retry_after is not None
                    else self._policy.backoff(retry, self._random)
                )
                log.info("%s %s: %d, retry %d in %.1fs", method, path, status, retry, wait)
                await self._sleep(wait)
                continue
            raise _error(status, raw, request_id, retry_after)


def _decode_success(status: int, raw: bytes, request_id: str | None) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiError(
            status, "unexpected_response", "the answer is not JSON", request_id=request_id
        ) from None


def _error(status: int, raw: bytes, request_id: str | None, retry_after: float | None) -> ApiError:
    """The API's ``{"error": {"code", "message", "details"?}}`` as an exception."""
    kind = ERRORS_BY_STATUS.get(status, ApiError)
    try:
        document = json.loads(raw)
        error = document["error"]
        code, message = str(error["code"]), str(error["message"])
        details: list[ErrorDetail] = [
            {"field": str(d["field"]), "code": str(d["code"]), "message": str(d["message"])}
            for d in error.get("details", [])
        ]
    except (ValueError, TypeError, KeyError, AttributeError):
        return kind(
            status,
            "unexpected_response",
            f"HTTP {status} without the API's error body",
            request_id=request_id,
            retry_after=retry_after,
        )
    return kind(
        status, code, message, details=details, request_id=request_id, retry_after=retry_after
    )
