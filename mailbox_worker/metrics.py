"""Every Prometheus metric the daemon exports, registered on a registry it is handed.

Labels carry only bounded, non-personal values: provider names, states, stable error codes.
Never an address, a subject, an account name or a token.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(frozen=True)
class Metrics:
    jobs_enqueued: Counter
    job_transitions: Counter
    jobs_by_state: Gauge
    provider_requests: Counter
    provider_latency: Histogram
    token_refreshes: Counter
    mailbox_reauth: Counter
    worker_in_flight: Gauge
    active_key_age: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> Metrics:
        return cls(
            jobs_enqueued=Counter(
                "mailbox_worker_jobs_enqueued",
                "Dispatch jobs accepted by the API.",
                ["mode"],
                registry=registry,
            ),
            job_transitions=Counter(
                "mailbox_worker_job_transitions",
                "Jobs leaving the running state, by new state and stable code.",
                ["state", "code"],
                registry=registry,
            ),
            jobs_by_state=Gauge(
                "mailbox_worker_jobs",
                "Jobs currently in each state (sampled by the worker).",
                ["state"],
                registry=registry,
            ),
            provider_requests=Counter(
                "mailbox_worker_provider_requests",
                "Provider calls by provider, operation and outcome code.",
                ["provider", "operation", "outcome"],
                registry=registry,
            ),
            provider_latency=Histogram(
                "mailbox_worker_provider_request_seconds",
                "Provider call latency.",
                ["provider", "operation"],
                registry=registry,
            ),
            token_refreshes=Counter(
                "mailbox_worker_token_refreshes",
                "Access-token refreshes at the identity provider, by outcome.",
                ["provider", "outcome"],
                registry=registry,
            ),
            mailbox_reauth=Counter(
                "mailbox_worker_mailbox_reauth_required",
                "Mailboxes that lost their grant and need their admin's consent again.",
                ["provider", "reason"],
                registry=registry,
            ),
            worker_in_flight=Gauge(
                "mailbox_worker_worker_in_flight",
                "Jobs this process is working on now.",
                registry=registry,
            ),
            active_key_age=Gauge(
                "mailbox_worker_active_key_age_seconds",
                "Age of the active key-encryption key as of this process's last rotation check "
                "(NaN when unknown: scheduled rotation off, or keys from MAILBOX_WORKER_KEYS).",
                registry=registry,
            ),
        )
