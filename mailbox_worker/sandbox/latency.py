"""The latency fault: how long each operation takes to answer, fixed or drawn from a distribution.

A rule is set per operation (the names the counters use: ``graph.sendMail``,
``graph.createMessage``, ``graph.sendDraft``, ``identity.token``, ``identity.token.refresh_token``,
``google.token``, ``gmail.messages.send``...), per family (``graph.*``) or for every operation
(``*``); the most specific rule wins. Values are milliseconds:

* a number — that fixed delay;
* ``{"distribution": "fixed", "ms": 200}`` — the same;
* ``{"distribution": "uniform", "min": 150, "max": 250}``;
* ``{"distribution": "normal", "mean": 200, "stddev": 30, "min": 100, "max": 400}`` — a normal
  draw clipped to ``[min, max]`` (``min`` defaults to 0, ``max`` to no bound).

Draws come from one generator seeded when the rules are set, so a run can be repeated. The
delay is taken inside the operation's handling (``faults.with_fault``): for Graph, after the
request has taken its slot among the mailbox's four concurrent requests, so a slow provider
fills the slots as the real one does (docs/providers.md B5).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Distribution = Literal["fixed", "uniform", "normal"]


@dataclass(frozen=True)
class Latency:
    """One rule: a delay in milliseconds, fixed or drawn."""

    distribution: Distribution
    low: float = 0.0
    """``fixed``: the delay; ``uniform`` and ``normal``: the lower bound."""
    high: float = math.inf
    """``uniform`` and ``normal``: the upper bound."""
    mean: float = 0.0
    stddev: float = 0.0

    def draw(self, generator: random.Random) -> float:
        """One delay, in seconds."""
        if self.distribution == "fixed":
            milliseconds = self.low
        elif self.distribution == "uniform":
            milliseconds = generator.uniform(self.low, self.high)
        else:
            milliseconds = min(self.high, max(self.low, generator.gauss(self.mean, self.stddev)))
        return milliseconds / 1000

    def describe(self) -> dict[str, Any]:
        """The rule as the control API shows it."""
        if self.distribution == "fixed":
            return {"distribution": "fixed", "ms": self.low}
        if self.distribution == "uniform":
            return {"distribution": "uniform", "min": self.low, "max": self.high}
        bounded = {"max": self.high} if math.isfinite(self.high) else {}
        return {
            "distribution": "normal",
            "mean": self.mean,
            "stddev": self.stddev,
            "min": self.low,
            **bounded,
        }


def _number(document: Mapping[str, Any], key: str, default: float | None = None) -> float:
    value = document.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number of milliseconds")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{key} must be >= 0")
    return float(value)


def latency_from(value: object) -> Latency:
    """A rule from its control-API form (see the module docstring); ValueError if invalid."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Latency("fixed", low=_number({"ms": value}, "ms"))
    if not isinstance(value, Mapping):
        raise ValueError("a latency is a number of milliseconds or an object")
    distribution = value.get("distribution", "fixed")
    if distribution == "fixed":
        return Latency("fixed", low=_number(value, "ms"))
    if distribution == "uniform":
        low, high = _number(value, "min"), _number(value, "max")
        if high < low:
            raise ValueError("max must be >= min")
        return Latency("uniform", low=low, high=high)
    if distribution == "normal":
        low = _number(value, "min", 0.0)
        high = _number(value, "max") if "max" in value else math.inf
        if high < low:
            raise ValueError("max must be >= min")
        mean, stddev = _number(value, "mean"), _number(value, "stddev")
        return Latency("normal", low=low, high=high, mean=mean, stddev=stddev)
    raise ValueError(f"unknown distribution {distribution!r}: fixed, uniform or normal")


def rule_for(rules: Mapping[str, Latency], operations: Iterable[str]) -> Latency | None:
    """The most specific rule for the first of ``operations`` that has one: its exact name,
    then its longest ``family.*``, then ``*``."""
    for operation in operations:
        if operation in rules:
            return rules[operation]
        parts = operation.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            family = ".".join(parts[:cut]) + ".*"
            if family in rules:
                return rules[family]
    return rules.get("*")
