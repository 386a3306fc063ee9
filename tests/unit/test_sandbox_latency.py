"""Latency rules of the sandbox: which rule an operation takes, and what a rule draws."""

from __future__ import annotations

import math
import random

import pytest

from mailbox_worker.sandbox.controls import SandboxControls
from mailbox_worker.sandbox.latency import Latency, latency_from, rule_for


def test_the_most_specific_rule_wins() -> None:
    rules = {
        "*": latency_from(1),
        "graph.*": latency_from(2),
        "graph.sendMail": latency_from(3),
        "identity.token": latency_from(4),
    }
    assert rule_for(rules, ["graph.sendMail"]) == latency_from(3)
    assert rule_for(rules, ["graph.createMessage"]) == latency_from(2)
    assert rule_for(rules, ["gmail.messages.send"]) == latency_from(1)
    # A token request names its grant first, then the endpoint.
    assert rule_for(rules, ["identity.token.refresh_token", "identity.token"]) == latency_from(4)
    assert rule_for({}, ["graph.sendMail"]) is None


def test_forms_of_a_rule() -> None:
    assert latency_from(250) == Latency("fixed", low=250.0)
    assert latency_from({"distribution": "fixed", "ms": 5}) == Latency("fixed", low=5.0)
    uniform = latency_from({"distribution": "uniform", "min": 1, "max": 2})
    assert uniform == Latency("uniform", low=1.0, high=2.0)
    normal = latency_from({"distribution": "normal", "mean": 10, "stddev": 2})
    assert normal == Latency("normal", low=0.0, high=math.inf, mean=10.0, stddev=2.0)
    assert normal.describe() == {"distribution": "normal", "mean": 10.0, "stddev": 2.0, "min": 0.0}
    for invalid in (True, "5", -1, math.nan, {"distribution": "uniform", "min": 1}, {"ms": "x"}):
        with pytest.raises(ValueError, match=r"number|>= 0"):
            latency_from(invalid)


def test_draws_are_in_seconds_and_bounded() -> None:
    generator = random.Random(1)
    assert Latency("fixed", low=200).draw(generator) == 0.2
    clipped = Latency("normal", low=100, high=120, mean=110, stddev=500)
    draws = [clipped.draw(generator) for _ in range(50)]
    assert all(0.1 <= each <= 0.12 for each in draws) and {0.1, 0.12} <= set(draws)


def test_graph_latency_is_the_default_for_graph_operations_only() -> None:
    controls = SandboxControls(graph_latency=0.5)
    assert controls.latency_for(["graph.sendMail"]) == 0.5
    assert controls.latency_for(["identity.token"]) == 0.0
    controls.set_latency({"graph.sendMail": 20})
    assert controls.latency_for(["graph.sendMail"]) == 0.02
    assert controls.latency_for(["graph.createMessage"]) == 0.5
    controls.set_latency({})
    assert controls.latency_for(["graph.sendMail"]) == 0.5
