"""What both simulators share: counters, the fault queue, chaos, the timing settings and the clock.

These are the knobs of the shared control API (``/_sandbox/counters``, ``/_sandbox/faults``,
``/_sandbox/chaos``, ``/_sandbox/settings``, ``/_sandbox/reset``); tests may turn them in-process
through the same methods.

*Chaos* (``start_chaos``) keeps injecting faults at random into chosen operations, at a rate per
kind, for a duration, from a seeded generator; every fault injected (queued or chaos) is counted
by kind and, when the message it hit is known, recorded under that message's ``Message-ID`` —
what a soak test reads to explain each job whose outcome the client could not learn.

``access_token_lifetime`` applies to Microsoft and Google tokens alike. ``clock`` is the one time
both simulators read; tests move it with ``advance`` (in-process only).

The *latency* rules (``set_latency``, module ``latency``) give operations an answer time, fixed or
drawn; ``graph_latency`` is the fixed one every Graph mail operation without a rule of its own
takes. Every delay is slept through ``sleep``, which tests may replace to see what was applied.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

from .clock import SandboxClock
from .latency import Latency, latency_from, rule_for

DEFAULT_ACCESS_TOKEN_LIFETIME = 3599

FaultKind = Literal[
    "status", "reset", "delay", "accept_then_status", "accept_then_reset", "accept_then_hang"
]
FAULT_KINDS: tuple[str, ...] = (
    "status",
    "reset",
    "delay",
    "accept_then_status",
    "accept_then_reset",
    "accept_then_hang",
)

ChaosKind = Literal[
    "throttle",
    "unavailable",
    "reset",
    "slow",
    "accept_then_error",
    "accept_then_reset",
    "accept_then_hang",
]
CHAOS_KINDS: dict[str, FaultKind] = {
    "throttle": "status",  # 429 + Retry-After, not processed
    "unavailable": "status",  # 503, not processed
    "reset": "reset",  # connection dropped before processing
    "slow": "delay",  # answered normally after ``slow_delay`` seconds
    "accept_then_error": "accept_then_status",  # processed, then an ambiguous 5xx
    "accept_then_reset": "accept_then_reset",  # processed, then the connection dropped
    "accept_then_hang": "accept_then_hang",  # processed, no answer until the client gives up
}
"""Chaos kinds and the fault each one injects."""

AMBIGUOUS_KINDS: frozenset[str] = frozenset(
    {"reset", "accept_then_error", "accept_then_status", "accept_then_reset", "accept_then_hang"}
)
"""Fault kinds (chaos or queued) after which a client that had sent its request cannot tell
whether it took effect: no answer at all, or a 5xx other than 503."""

DEFAULT_CHAOS_OPERATIONS: tuple[str, ...] = ("graph.sendMail", "graph.createMessage")


@dataclass
class Fault:
    """A queued misbehaviour for the next ``times`` calls of ``operation``."""

    operation: str
    kind: FaultKind
    status: int = 503
    retry_after: int | None = None
    delay: float = 0.0
    times: int = 1
    label: str = ""
    """What to count it as: the chaos kind, or ``kind`` for a queued fault."""

    def __post_init__(self) -> None:
        self.label = self.label or self.kind


@dataclass
class Chaos:
    """Random faults for ``operations`` until ``until`` (``time.monotonic``; None: no end).

    Each call draws once from ``generator``: kind ``k`` is injected with probability
    ``rates[k]`` (the rates sum to at most 1). ``accept_then_hang`` holds the answer for at
    most ``hang_limit`` seconds, waiting for the client to hang up. Every call that draws no
    fault takes ``latency`` seconds before it is processed (the real services' answer time),
    so that concurrent requests overlap as they do in production.
    """

    rates: dict[str, float]
    operations: frozenset[str]
    until: float | None
    generator: random.Random
    seed: int
    retry_after: int = 1
    error_status: int = 500
    slow_delay: float = 0.5
    hang_limit: float = 30.0
    latency: float = 0.0

    def applies(self, operation: str) -> bool:
        """Whether ``operation`` is one chaos acts on, now."""
        return operation in self.operations and self.active()

    def active(self) -> bool:
        """Whether it still injects."""
        return self.until is None or time.monotonic() < self.until

    def draw(self, operation: str) -> Fault | None:
        """The fault for one call of ``operation``, or None (most calls)."""
        if not self.applies(operation):
            return None
        roll, edge = self.generator.random(), 0.0
        for label, rate in self.rates.items():
            edge += rate
            if roll < edge:
                return self._fault(operation, label)
        return None

    def _fault(self, operation: str, label: str) -> Fault:
        kind = CHAOS_KINDS[label]
        if label == "throttle":
            return Fault(operation, kind, 429, self.retry_after, label=label)
        if label == "unavailable":
            return Fault(operation, kind, 503, self.retry_after, label=label)
        if label == "accept_then_error":
            return Fault(operation, kind, self.error_status, label=label)
        if label == "slow":
            return Fault(operation, kind, delay=self.slow_delay, label=label)
        if label == "accept_then_hang":
            return Fault(operation, kind, delay=self.hang_limit, label=label)
        return Fault(operation, kind, label=label)


@dataclass
class SandboxControls:
    """Counters, faults, timing settings, the clock. Not thread-safe: use it from the event loop."""

    access_token_lifetime: int = DEFAULT_ACCESS_TOKEN_LIFETIME
    throttle_retry_after: int = 1
    graph_latency: float = 0.0
    """Seconds each Graph mail request takes once its body is read (Graph's own answer time):
    with more than 0, concurrent requests overlap and the per-mailbox concurrency limit
    (docs/providers.md B5) is reached as it is in production. A ``latency`` rule for the
    operation takes its place."""
    latencies: dict[str, Latency] = field(default_factory=dict)
    """Latency rules by operation, ``family.*`` or ``*`` (``set_latency``)."""
    latency_seed: int = 0
    latency_generator: random.Random = field(default_factory=lambda: random.Random(0))
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, repr=False)
    """How every latency and delay is waited for (tests may record instead)."""
    operation_counters: Counter[str] = field(default_factory=Counter)
    faults: deque[Fault] = field(default_factory=deque)
    clock: SandboxClock = field(default_factory=SandboxClock)
    chaos: Chaos | None = None
    injected: Counter[str] = field(default_factory=Counter)
    """Faults injected so far, by label (chaos kind, or the queued fault's kind)."""
    faults_by_message_id: dict[str, list[str]] = field(default_factory=dict)
    """The labels of the faults that hit each message whose ``Message-ID`` is known (it is when
    the fault came after the message was accepted), in order."""
    faults_by_request_id: dict[str, str] = field(default_factory=dict)
    """The label of the fault that hit each request carrying a ``client-request-id`` header (as
    Graph clients send, and log): how a fault before processing is traced to a client's job."""

    # -- counters ----------------------------------------------------------------------------

    def count(self, operation: str) -> None:
        """Count one call of ``operation``."""
        self.operation_counters[operation] += 1

    def counters(self) -> dict[str, int]:
        """All counters, by operation name."""
        return dict(self.operation_counters)

    # -- faults ------------------------------------------------------------------------------

    def queue_fault(
        self,
        operation: str,
        kind: str,
        status: int = 503,
        retry_after: int | None = None,
        delay: float = 0.0,
        times: int = 1,
    ) -> Fault:
        """Queue a fault for the next ``times`` calls of ``operation`` (FIFO per operation)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        if times < 1 or not 100 <= status <= 599 or delay < 0:
            raise ValueError("times must be >= 1, status an HTTP status, delay >= 0")
        if kind == "accept_then_hang" and delay == 0:
            delay = 30.0
        fault = Fault(operation, cast(FaultKind, kind), status, retry_after, delay, times)
        self.faults.append(fault)
        return fault

    def take_fault(self, operation: str) -> Fault | None:
        """The next fault queued for ``operation`` (consuming one of its ``times``)."""
        for fault in self.faults:
            if fault.operation == operation:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def clear_faults(self) -> None:
        """Forget every queued fault."""
        self.faults.clear()

    def note_fault(
        self, fault: Fault, message_ids: Sequence[str] = (), request_id: str | None = None
    ) -> None:
        """Count an injected fault; remember the ``Message-ID`` of each message it hit and the
        ``client-request-id`` of the request it hit (when the client sent one)."""
        self.injected[fault.label] += 1
        for message_id in message_ids:
            if message_id:
                self.faults_by_message_id.setdefault(message_id, []).append(fault.label)
        if request_id:
            self.faults_by_request_id[request_id] = fault.label

    # -- latency -----------------------------------------------------------------------------

    def set_latency(self, rules: Mapping[str, object], seed: int = 0) -> dict[str, Latency]:
        """Replace the latency rules (values as ``latency.latency_from`` reads them; an empty
        mapping removes every rule) and reseed their generator; ValueError if one is invalid."""
        parsed = {str(operation): latency_from(value) for operation, value in rules.items()}
        self.latencies = parsed
        self.latency_seed = seed
        self.latency_generator = random.Random(seed)
        return parsed

    def latency_for(self, operations: Iterable[str]) -> float:
        """Seconds one call of the first of ``operations`` takes before it is processed: its
        rule's draw, else ``graph_latency`` for a Graph operation, else 0."""
        names = tuple(operations)
        rule = rule_for(self.latencies, names)
        if rule is not None:
            return rule.draw(self.latency_generator)
        if names and names[0].startswith("graph."):
            return self.graph_latency
        return 0.0

    async def take_latency(self, operations: Iterable[str]) -> None:
        """Wait as long as one call of ``operations`` takes (``latency_for``)."""
        seconds = self.latency_for(operations)
        if seconds > 0:
            await self.sleep(seconds)

    def latency_report(self) -> dict[str, object]:
        """The latency rules as the control API shows them."""
        return {operation: rule.describe() for operation, rule in self.latencies.items()}

    # -- chaos -------------------------------------------------------------------------------

    def start_chaos(
        self,
        rates: dict[str, float],
        *,
        seed: int = 0,
        duration: float | None = None,
        operations: tuple[str, ...] = DEFAULT_CHAOS_OPERATIONS,
        retry_after: int = 1,
        error_status: int = 500,
        slow_delay: float = 0.5,
        hang_limit: float = 30.0,
        latency: float = 0.0,
    ) -> Chaos:
        """Inject random faults into ``operations`` for ``duration`` seconds (None: until
        ``stop_chaos``), replacing any chaos already running. Counts and records start afresh.

        ``rates`` maps chaos kinds (``CHAOS_KINDS``) to probabilities per call, summing to at
        most 1; a call without a fault takes ``latency`` seconds. ``error_status`` (of
        ``accept_then_error``) must be a 5xx other than 503, which would tell the client,
        falsely, that nothing was processed.
        """
        unknown = sorted(set(rates) - set(CHAOS_KINDS))
        if unknown:
            raise ValueError(f"unknown chaos kinds {unknown}")
        if any(rate < 0 for rate in rates.values()) or sum(rates.values()) > 1 + 1e-9:
            raise ValueError("rates must be >= 0 and sum to at most 1")
        if not 500 <= error_status <= 599 or error_status == 503:
            raise ValueError("error_status must be a 5xx other than 503")
        if (duration is not None and duration <= 0) or min(slow_delay, hang_limit, latency) < 0:
            raise ValueError("duration must be > 0, slow_delay, hang_limit and latency >= 0")
        if retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        self.injected.clear()
        self.faults_by_message_id.clear()
        self.faults_by_request_id.clear()
        self.chaos = Chaos(
            rates={label: rates[label] for label in CHAOS_KINDS if label in rates},
            operations=frozenset(operations),
            until=None if duration is None else time.monotonic() + duration,
            generator=random.Random(seed),
            seed=seed,
            retry_after=retry_after,
            error_status=error_status,
            slow_delay=slow_delay,
            hang_limit=hang_limit,
            latency=latency,
        )
        return self.chaos

    def stop_chaos(self) -> None:
        """Stop injecting random faults; the counts and records stay."""
        self.chaos = None

    def chaos_report(self) -> dict[str, object]:
        """Whether chaos is active, its seed and rates, and what was injected so far."""
        chaos = self.chaos
        return {
            "active": chaos is not None and chaos.active(),
            "seed": None if chaos is None else chaos.seed,
            "rates": {} if chaos is None else dict(chaos.rates),
            "injected": dict(self.injected),
            "faults_by_message_id": {
                message_id: list(labels) for message_id, labels in self.faults_by_message_id.items()
            },
            "faults_by_request_id": dict(self.faults_by_request_id),
        }

    # -- time --------------------------------------------------------------------------------

    def now(self) -> float:
        """The sandbox's current time, in seconds since the epoch (``clock``)."""
        return self.clock.time()

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for the sandbox: what expires within them is expired."""
        self.clock.advance(seconds)

    # -- reset -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget counters, faults, chaos and its records (a subclass forgets its own records
        too); time stays."""
        self.operation_counters.clear()
        self.faults.clear()
        self.chaos = None
        self.injected.clear()
        self.faults_by_message_id.clear()
        self.faults_by_request_id.clear()
