"""Rate limits of the ``/v1`` API, per API key, and a brake on repeated bad keys per client
address (docs/api.md#rate-limits).

- Each API key (by its id, never its secret) has a token bucket: ``rate_limit_per_second``
  tokens a second, at most ``rate_limit_burst`` saved up. A request takes one token once its
  key is authenticated (``admit``, called by ``auth.authenticate``); with none left it is
  ``429 rate_limited`` with ``Retry-After``. A request whose key is not valid takes no
  token of anyone's: a guessed key id cannot drain its owner's bucket.
- Each client address that sends ``failed_auth_limit`` invalid keys within
  ``failed_auth_window`` seconds is refused ``429 too_many_failed_attempts`` for a penalty,
  before any key lookup; the penalty doubles each time the address trips again (up to
  ``failed_auth_max_penalty``) and is forgotten after a quiet ``failed_auth_max_penalty``.

Both live in this process's memory, bounded to ``max_tracked`` keys and addresses (the least
recently seen are forgotten first): with several API processes, each counts on its own, so
the limits multiply by their number. Time comes from the daemon's ``Clock``. ``/healthz``,
``/readyz``, ``/metrics`` and everything outside ``/v1`` are never limited.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from mailbox_worker.api.errors import error_response
from mailbox_worker.clock import Clock
from mailbox_worker.errors import TooManyRequests, Unauthenticated
from mailbox_worker.telemetry import Telemetry

LIMITED_PREFIX = "/v1/"
RATE_LIMITED = "rate_limited"
TOO_MANY_FAILED_ATTEMPTS = "too_many_failed_attempts"
REASONS = (RATE_LIMITED, TOO_MANY_FAILED_ATTEMPTS)
"""Every ``reason`` label of ``mailbox_worker_api_rate_limited_total``."""
UNKNOWN_ADDRESS = "unknown"
MAX_STRIKES = 32
"""Doublings counted at most: the penalty is bounded anyway, and 2.0**n must stay a float."""


@dataclass(frozen=True)
class RateLimitSettings:
    """The ``[api]`` section (documented in ``config/mailbox-worker.toml``)."""

    rate_limit_per_second: float = 50.0
    """Requests a second each API key may make, on average; 0 turns the limit off."""
    rate_limit_burst: int = 100
    """Requests an API key may make at once after a quiet time."""
    failed_auth_limit: int = 20
    """Invalid API keys one client address may send within ``failed_auth_window``; 0: off."""
    failed_auth_window: float = 60.0
    failed_auth_penalty: float = 10.0
    """Seconds an address is refused the first time; doubled on each repetition."""
    failed_auth_max_penalty: float = 600.0
    max_tracked: int = 10_000
    """API keys, and client addresses, remembered at most (each)."""


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One token bucket per name: ``per_second`` tokens a second, at most ``burst`` saved."""

    def __init__(self, per_second: float, burst: int, max_tracked: int) -> None:
        self._per_second = per_second
        self._burst = float(burst)
        self._max_tracked = max_tracked
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, name: str, now: float) -> int | None:
        """Take a token from ``name``'s bucket: None when there was one, else the whole
        seconds (at least 1) until there will be."""
        bucket = self._buckets.pop(name, None)
        if bucket is None:
            bucket = _Bucket(self._burst, now)
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._per_second)
        bucket.updated = now
        self._buckets[name] = bucket  # the most recently seen last
        while len(self._buckets) > self._max_tracked:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - bucket.tokens) / self._per_second))


@dataclass
class _Failures:
    window_start: float
    count: int = 0
    strikes: int = 0
    blocked_until: float = 0.0


class FailedAttempts:
    """Invalid keys counted per client address, and the penalties they earn."""

    def __init__(self, settings: RateLimitSettings) -> None:
        self._settings = settings
        self._addresses: OrderedDict[str, _Failures] = OrderedDict()

    def __len__(self) -> int:
        return len(self._addresses)

    def penalty(self, address: str, now: float) -> int | None:
        """The whole seconds (at least 1) ``address`` must still wait, or None."""
        failures = self._addresses.get(address)
        if failures is None or failures.blocked_until <= now:
            return None
        return max(1, math.ceil(failures.blocked_until - now))

    def record(self, address: str, now: float) -> None:
        """``address`` sent an invalid key: count it, and start a penalty at the limit."""
        settings = self._settings
        failures = self._addresses.pop(address, None) or _Failures(window_start=now)
        if now - failures.blocked_until >= settings.failed_auth_max_penalty:
            failures.strikes = 0  # quiet long enough since its last penalty: a clean slate
        if now - failures.window_start >= settings.failed_auth_window:
            failures.window_start, failures.count = now, 0
        failures.count += 1
        if failures.count >= settings.failed_auth_limit:
            penalty = settings.failed_auth_penalty * 2.0**failures.strikes
            failures.blocked_until = now + min(penalty, settings.failed_auth_max_penalty)
            failures.strikes = min(failures.strikes + 1, MAX_STRIKES)
            failures.window_start, failures.count = now, 0
        self._addresses[address] = failures  # the most recently failing last
        while len(self._addresses) > settings.max_tracked:
            self._addresses.popitem(last=False)


class ApiRateLimits:
    """The limits of one API process, over the daemon's ``clock``."""

    def __init__(self, settings: RateLimitSettings, clock: Clock) -> None:
        self.settings = settings
        self._clock = clock
        self._keys = TokenBuckets(
            settings.rate_limit_per_second, settings.rate_limit_burst, settings.max_tracked
        )
        self._failures = FailedAttempts(settings)

    def _now(self) -> float:
        return self._clock().timestamp()

    def admit(self, key_id: str) -> None:
        """Charge one request to the authenticated key ``key_id``; ``TooManyRequests``
        (rate_limited) when its bucket is empty."""
        if self.settings.rate_limit_per_second <= 0:
            return
        wait = self._keys.take(key_id, self._now())
        if wait is not None:
            raise TooManyRequests(
                f"this API key exceeded its rate limit of {self.settings.rate_limit_per_second:g} "
                f"requests a second; retry after {wait} s",
                retry_after=wait,
            )

    def check_address(self, address: str) -> None:
        """``TooManyRequests`` (too_many_failed_attempts) while ``address`` is penalised."""
        if self.settings.failed_auth_limit <= 0:
            return
        wait = self._failures.penalty(address, self._now())
        if wait is not None:
            raise TooManyRequests(
                f"too many invalid API keys from this address; retry after {wait} s",
                code=TOO_MANY_FAILED_ATTEMPTS,
                retry_after=wait,
            )

    def failed(self, address: str) -> None:
        """``address`` presented an invalid API key."""
        if self.settings.failed_auth_limit > 0:
            self._failures.record(address, self._now())


RATE_LIMITS = web.RequestKey("rate_limits", ApiRateLimits)


def client_address(remote: str | None) -> str:
    """Who failed attempts are counted against: the peer's IPv4 address, or its IPv6 /64
    (one host's share: it has a whole /64 to hop through)."""
    if not remote:
        return UNKNOWN_ADDRESS
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote  # a Unix socket's path, say: one client
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def admit(request: web.Request, key_id: str) -> None:
    """Charge the request to the authenticated key ``key_id`` (see ``ApiRateLimits.admit``);
    nothing outside the middleware's reach (``/v1`` only)."""
    limits = request.get(RATE_LIMITS)
    if limits is not None:
        limits.admit(key_id)


def rate_limit_middleware(
    settings: RateLimitSettings, clock: Clock, telemetry: Telemetry
) -> Middleware:
    """Refuses ``/v1`` requests over a limit of ``settings`` (one ``ApiRateLimits`` for the
    application) with ``429`` and ``Retry-After``; counts each refusal into
    ``telemetry.api_rate_limited``. Sits inside the error middleware: it sees the handler's
    ``Unauthenticated`` before it becomes a 401."""
    limits = ApiRateLimits(settings, clock)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(LIMITED_PREFIX):
            return await handler(request)
        address = client_address(request.remote)
        request[RATE_LIMITS] = limits
        try:
            limits.check_address(address)
            return await handler(request)
        except Unauthenticated:
            if "Authorization" in request.headers:  # a key was presented, and it was wrong
                limits.failed(address)
            raise
        except TooManyRequests as refusal:
            telemetry.api_rate_limited(refusal.code)
            return error_response(
                429,
                refusal.code,
                refusal.message,
                headers={"Retry-After": str(refusal.retry_after)},
            )

    return middleware
