"""What both simulators share: counters, the fault queue, the timing settings and the clock.

These are the knobs of the shared control API (``/_sandbox/counters``, ``/_sandbox/faults``,
``/_sandbox/settings``, ``/_sandbox/reset``); tests may turn them in-process through the same
methods. ``access_token_lifetime`` applies to Microsoft and Google tokens alike. ``clock`` is the
one time both simulators read; tests move it with ``advance`` (in-process only).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Literal, cast

from .clock import SandboxClock

DEFAULT_ACCESS_TOKEN_LIFETIME = 3599

FaultKind = Literal["status", "reset", "delay", "accept_then_status", "accept_then_reset"]
FAULT_KINDS: tuple[str, ...] = (
    "status",
    "reset",
    "delay",
    "accept_then_status",
    "accept_then_reset",
)


@dataclass
class Fault:
    """A queued misbehaviour for the next ``times`` calls of ``operation``."""

    operation: str
    kind: FaultKind
    status: int = 503
    retry_after: int | None = None
    delay: float = 0.0
    times: int = 1


@dataclass
class SandboxControls:
    """Counters, faults, timing settings, the clock. Not thread-safe: use it from the event loop."""

    access_token_lifetime: int = DEFAULT_ACCESS_TOKEN_LIFETIME
    throttle_retry_after: int = 1
    operation_counters: Counter[str] = field(default_factory=Counter)
    faults: deque[Fault] = field(default_factory=deque)
    clock: SandboxClock = field(default_factory=SandboxClock)

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

    # -- time --------------------------------------------------------------------------------

    def now(self) -> float:
        """The sandbox's current time, in seconds since the epoch (``clock``)."""
        return self.clock.time()

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for the sandbox: what expires within them is expired."""
        self.clock.advance(seconds)

    # -- reset -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget counters and faults (a subclass forgets its own records too); time stays."""
        self.operation_counters.clear()
        self.faults.clear()
