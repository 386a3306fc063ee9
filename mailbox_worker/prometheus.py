"""The Prometheus adapter of the telemetry port: every metric the daemon exports.

Registered on the registry it is handed; ``render`` answers ``GET /metrics``. Only the
composition root (``mailbox_worker.app``) imports this module (an import-linter contract
keeps it so). Labels carry only bounded, non-personal values: provider names, states, stable
error codes. Never an address, a subject, an account name or a token.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Metric,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mailbox_worker import lanes

if TYPE_CHECKING:
    from mailbox_worker.telemetry import Telemetry


# Buckets of a job's processing: a token refresh and a send take a second or so; a large
# draft (uploads in chunks) or a slow provider, minutes.
PROCESSING_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
RECOVERY_RESULTS = ("requeued", "unknown")
CALLBACK_RESULTS = ("delivered", "rejected", "unreachable")
RATE_LIMIT_REASONS = ("rate_limited", "too_many_failed_attempts")  # api/rate_limits.py REASONS


def status_class(status: int | None) -> str:
    """``2xx`` … ``5xx`` for an HTTP status, ``none`` when there was no answer."""
    return "none" if status is None else f"{status // 100}xx"


class LaneCollector(Collector):
    """The lanes beside the event loop (``mailbox_worker/lanes.py``), read at each scrape: the
    works each holds, their request bytes, and the works it refused."""

    def __init__(self, watched: Sequence[lanes.Lane] = lanes.LANES) -> None:
        self._lanes = watched

    def collect(self) -> Iterator[Metric]:
        works = GaugeMetricFamily(
            "mailbox_worker_lane_works",
            "Works admitted to a thread beside the event loop and not finished, the running one "
            "included.",
            labels=["lane"],
        )
        held = GaugeMetricFamily(
            "mailbox_worker_lane_bytes",
            "Request bytes the works in a lane hold.",
            labels=["lane"],
        )
        refused = CounterMetricFamily(
            "mailbox_worker_lane_refusals",
            "Works a full lane refused (answered 503 server_busy).",
            labels=["lane"],
        )
        for lane in self._lanes:
            works.add_metric([lane.name], lane.held)
            held.add_metric([lane.name], lane.held_bytes)
            refused.add_metric([lane.name], lane.refused)
        yield works
        yield held
        yield refused


class PrometheusTelemetry:
    """The adapter; ``version`` is the daemon's, exported as ``mailbox_worker_build_info``."""

    def __init__(self, registry: CollectorRegistry, version: str = "unknown") -> None:
        self.registry = registry
        build_info = Gauge(
            "mailbox_worker_build_info",
            "Always 1: the daemon's version and the Python running it.",
            ["version", "python"],
            registry=registry,
        )
        build_info.labels(version=version, python=platform.python_version()).set(1)
        registry.register(LaneCollector())
        self._jobs_enqueued = Counter(
            "mailbox_worker_jobs_enqueued",
            "Dispatch jobs accepted by the API.",
            ["mode"],
            registry=registry,
        )
        self._job_transitions = Counter(
            "mailbox_worker_job_transitions",
            "Jobs leaving the running state, by new state and stable code.",
            ["state", "code"],
            registry=registry,
        )
        self._jobs_by_state = Gauge(
            "mailbox_worker_jobs",
            "Jobs currently in each state (sampled by the worker).",
            ["state"],
            registry=registry,
        )
        self._job_age = Gauge(
            "mailbox_worker_oldest_job_age_seconds",
            "How long the oldest due queued job has waited since it became due, and the oldest "
            "running job since it was claimed; 0 when there is none (sampled by the worker).",
            ["state"],
            registry=registry,
        )
        self._mailboxes_by_state = Gauge(
            "mailbox_worker_mailboxes",
            "Mailboxes currently in each state, by provider (sampled by the worker).",
            ["provider", "state"],
            registry=registry,
        )
        self._job_processing = Histogram(
            "mailbox_worker_job_processing_seconds",
            "The worker's processing of one claimed job, from its claim to its outcome "
            "recorded (token, MIME, provider calls), whatever the outcome.",
            ["provider", "mode"],
            buckets=PROCESSING_BUCKETS,
            registry=registry,
        )
        self._job_deferrals = Counter(
            "mailbox_worker_job_deferrals",
            "Running jobs sent back to queued to be tried later, by provider and error code.",
            ["provider", "code"],
            registry=registry,
        )
        self._job_deferred_seconds = Counter(
            "mailbox_worker_job_deferred_seconds",
            "Seconds those jobs were deferred by (a provider's Retry-After when throttled).",
            ["provider", "code"],
            registry=registry,
        )
        self._lease_recoveries = Counter(
            "mailbox_worker_lease_recoveries",
            "Jobs whose worker vanished (lease expired): requeued, or unknown when a request "
            "was in flight.",
            ["result"],
            registry=registry,
        )
        for result in RECOVERY_RESULTS:
            self._lease_recoveries.labels(result=result)
        self._provider_requests = Counter(
            "mailbox_worker_provider_requests",
            "Provider calls by provider, operation, outcome code and HTTP status class.",
            ["provider", "operation", "outcome", "status_class"],
            registry=registry,
        )
        self._provider_latency = Histogram(
            "mailbox_worker_provider_request_seconds",
            "Provider call latency.",
            ["provider", "operation"],
            registry=registry,
        )
        self._token_refreshes = Counter(
            "mailbox_worker_token_refreshes",
            "Access-token refreshes at the identity provider, by outcome.",
            ["provider", "outcome"],
            registry=registry,
        )
        self._mailbox_reauth = Counter(
            "mailbox_worker_mailbox_reauth_required",
            "Mailboxes that lost their grant and need their admin's consent again.",
            ["provider", "reason"],
            registry=registry,
        )
        self._mailbox_pauses = Counter(
            "mailbox_worker_mailbox_pauses",
            "Mailboxes paused for every worker (a provider's 429 and its Retry-After).",
            ["reason"],
            registry=registry,
        )
        self._worker_in_flight = Gauge(
            "mailbox_worker_worker_in_flight",
            "Jobs this process is working on now.",
            registry=registry,
        )
        self._active_key_age = Gauge(
            "mailbox_worker_active_key_age_seconds",
            "Age of the active key-encryption key as of this process's last rotation check "
            "(NaN when unknown: scheduled rotation off, or keys from MAILBOX_WORKER_KEYS).",
            registry=registry,
        )
        # Route labels stay bounded: the matched template or ``unmatched``
        # (``mailbox_worker.api.http_metrics`` decides them).
        self._http_requests = Counter(
            "mailbox_worker_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self._api_rate_limited = Counter(
            "mailbox_worker_api_rate_limited",
            "API requests refused with 429, by reason: rate_limited (an API key over its rate) "
            "or too_many_failed_attempts (an address that sent too many invalid keys).",
            ["reason"],
            registry=registry,
        )
        for reason in RATE_LIMIT_REASONS:
            self._api_rate_limited.labels(reason=reason)

        self._database_connections = Gauge(
            "mailbox_worker_database_connections",
            "PostgreSQL connections: the most the pool opens (bound=pool) and the most this "
            "process can hold at once (bound=needed); docs/architecture.md#pool-sizing.",
            ["bound"],
            registry=registry,
        )
        self._loop_errors = Counter(
            "mailbox_worker_loop_errors",
            "Passes of a background loop that raised (the loop backs off and goes on).",
            ["loop"],
            registry=registry,
        )

        self._loop_interval = Gauge(
            "mailbox_worker_loop_interval_seconds",
            "How often each running background loop means to complete a pass.",
            ["loop"],
            registry=registry,
        )
        self._loop_last_success = Gauge(
            "mailbox_worker_loop_last_success_timestamp_seconds",
            "Unix time of the last pass of each background loop that returned.",
            ["loop"],
            registry=registry,
        )
        self._callback_deliveries = Counter(
            "mailbox_worker_callback_deliveries",
            "Events POSTed to the callback URL: delivered (2xx), rejected (another status) or "
            "unreachable (no answer in time).",
            ["result"],
            registry=registry,
        )
        for result in CALLBACK_RESULTS:
            self._callback_deliveries.labels(result=result)

        self._pending_outcomes = Gauge(
            "mailbox_worker_pending_outcomes",
            "Job outcomes kept in memory because the database could not take them yet.",
            registry=registry,
        )
        self._outcome_flushes = Counter(
            "mailbox_worker_outcome_flushes",
            "Pending job outcomes that left memory: written, lease_lost or abandoned.",
            ["result"],
            registry=registry,
        )
        self._policy_violations = Counter(
            "mailbox_worker_policy_violations",
            "Operations our privacy rules forbid that were attempted and refused, by rule.",
            ["rule"],
            registry=registry,
        )
        self._retention_purged = Counter(
            "mailbox_worker_retention_purged_rows",
            "Rows the retention purge removed (or, for disconnected mailboxes, blanked), by kind.",
            ["kind"],
            registry=registry,
        )

    def render(self) -> tuple[bytes, str]:
        """Every metric of the registry in the text format, with its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def job_enqueued(self, mode: str) -> None:
        self._jobs_enqueued.labels(mode=mode).inc()

    def job_transition(self, state: str, code: str) -> None:
        self._job_transitions.labels(state=state, code=code).inc()

    def jobs_in_state(self, state: str, count: int) -> None:
        self._jobs_by_state.labels(state=state).set(count)

    def job_age(self, state: str, seconds: float) -> None:
        self._job_age.labels(state=state).set(seconds)

    def mailboxes_in_state(self, provider: str, state: str, count: int) -> None:
        self._mailboxes_by_state.labels(provider=provider, state=state).set(count)

    def job_processed(self, provider: str, mode: str, seconds: float) -> None:
        self._job_processing.labels(provider=provider, mode=mode).observe(seconds)

    def job_deferred(self, provider: str, code: str, seconds: float) -> None:
        self._job_deferrals.labels(provider=provider, code=code).inc()
        self._job_deferred_seconds.labels(provider=provider, code=code).inc(max(seconds, 0.0))

    def leases_recovered(self, result: str, count: int) -> None:
        self._lease_recoveries.labels(result=result).inc(count)

    def provider_request(
        self, provider: str, operation: str, outcome: str, seconds: float, status: int | None
    ) -> None:
        self._provider_requests.labels(
            provider=provider,
            operation=operation,
            outcome=outcome,
            status_class=status_class(status),
        ).inc()
        self._provider_latency.labels(provider=provider, operation=operation).observe(seconds)

    def token_refresh(self, provider: str, outcome: str) -> None:
        self._token_refreshes.labels(provider=provider, outcome=outcome).inc()

    def mailbox_reauth(self, provider: str, reason: str) -> None:
        self._mailbox_reauth.labels(provider=provider, reason=reason).inc()

    def mailbox_paused(self, reason: str) -> None:
        self._mailbox_pauses.labels(reason=reason).inc()

    def in_flight(self, count: int) -> None:
        self._worker_in_flight.set(count)

    def active_key_age(self, seconds: Callable[[], float]) -> None:
        self._active_key_age.set_function(seconds)

    def database_pool(self, capacity: int, needed: int) -> None:
        """The pool's size (``pool_size + max_overflow``) and the process's peak demand."""
        self._database_connections.labels("pool").set(capacity)
        self._database_connections.labels("needed").set(needed)

    def loop_error(self, loop: str) -> None:
        self._loop_errors.labels(loop=loop).inc()

    def loop_started(self, loop: str, interval: float) -> None:
        self._loop_interval.labels(loop=loop).set(interval)

    def loop_succeeded(self, loop: str) -> None:
        # Wall-clock time on purpose: the alert compares it with Prometheus's time().
        self._loop_last_success.labels(loop=loop).set(time.time())

    def callback_delivery(self, result: str) -> None:
        self._callback_deliveries.labels(result=result).inc()

    def pending_outcomes(self, count: int) -> None:
        self._pending_outcomes.set(count)

    def outcome_flushed(self, result: str) -> None:
        self._outcome_flushes.labels(result=result).inc()

    def policy_violation(self, rule: str) -> None:
        self._policy_violations.labels(rule=rule).inc()

    def http_request(self, method: str, route: str, status: int) -> None:
        self._http_requests.labels(method=method, route=route, status=str(status)).inc()

    def api_rate_limited(self, reason: str) -> None:
        self._api_rate_limited.labels(reason=reason).inc()

    def retention_purged(self, kind: str, rows: int) -> None:
        self._retention_purged.labels(kind=kind).inc(rows)


if TYPE_CHECKING:
    # mypy proves the adapter conforms to the port.
    _conforming: type[Telemetry] = PrometheusTelemetry
