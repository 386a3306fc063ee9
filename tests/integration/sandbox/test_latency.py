"""The latency fault: a fixed or drawn answer time per operation, set through
``POST /_sandbox/settings`` and taken while the request holds its Graph concurrency slot
(module ``mailbox_worker.sandbox.latency``, docs/providers.md B5 and F).

The sandbox's ``sleep`` is replaced: the tests read the delays it was asked for, or hold the
requests in it, instead of timing anything.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import requests

from mailbox_worker.sandbox import Sandbox

from .microsoft_helpers import bearer, counters, invoice_mime, mime_body, sign_in


def recording(sandbox: Sandbox) -> list[float]:
    """Make the sandbox's delays instant; return the list they are recorded in."""
    asked: list[float] = []

    async def sleep(seconds: float) -> None:
        asked.append(seconds)

    sandbox.state.sleep = sleep
    return asked


async def settings(
    http: aiohttp.ClientSession, sandbox: Sandbox, document: dict[str, object]
) -> tuple[int, dict[str, object]]:
    async with http.post(f"{sandbox.base_url}/_sandbox/settings", json=document) as answer:
        return answer.status, await answer.json()


def sender(
    http: aiohttp.ClientSession, sandbox: Sandbox, token: str
) -> Callable[[], Coroutine[Any, Any, int]]:
    async def send() -> int:
        async with http.post(
            f"{sandbox.graph_url}/me/sendMail",
            data=mime_body(invoice_mime()),
            headers=bearer(token),
        ) as answer:
            return answer.status

    return send


async def test_a_fixed_latency_applies_to_its_operation_only(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    asked = recording(sandbox)
    status, shown = await settings(http, sandbox, {"latency": {"graph.sendMail": 200}})
    assert status == 200
    assert shown["latency"] == {"graph.sendMail": {"distribution": "fixed", "ms": 200.0}}
    send = sender(http, sandbox, signed_in.access_token)
    assert [await send(), await send()] == [202, 202]
    assert asked == [0.2, 0.2]
    async with http.get(f"{sandbox.base_url}/_sandbox/settings") as answer:
        assert (await answer.json())["latency"] == shown["latency"]
    # Another operation has no rule: GET /me is not delayed.
    async with http.get(
        f"{sandbox.graph_url}/me", headers=bearer(signed_in.access_token)
    ) as answer:
        assert answer.status in (200, 403)
    assert asked == [0.2, 0.2]


async def test_drawn_latencies_follow_the_seeded_distribution(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    asked = recording(sandbox)
    rule = {"distribution": "uniform", "min": 150, "max": 250}
    status, _ = await settings(http, sandbox, {"latency": {"graph.*": rule}, "latency_seed": 7})
    assert status == 200
    send = sender(http, sandbox, signed_in.access_token)
    for _ in range(5):
        assert await send() == 202
    expected = random.Random(7)
    assert asked == [expected.uniform(150, 250) / 1000 for _ in range(5)]
    assert len(set(asked)) == 5 and all(0.15 <= each <= 0.25 for each in asked)


async def test_a_normal_latency_is_clipped_to_its_bounds(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    asked = recording(sandbox)
    rule = {"distribution": "normal", "mean": 200, "stddev": 1000, "min": 100, "max": 300}
    status, shown = await settings(http, sandbox, {"latency": {"*": rule}, "latency_seed": 3})
    assert status == 200 and shown["latency"] == {"*": {**rule, "min": 100.0, "max": 300.0}}
    send = sender(http, sandbox, signed_in.access_token)
    for _ in range(8):
        assert await send() == 202
    expected = random.Random(3)
    draws = [min(300.0, max(100.0, expected.gauss(200, 1000))) / 1000 for _ in range(8)]
    assert asked == draws
    assert {0.1, 0.3} & set(asked)  # so wide a spread hits a bound within eight draws


async def test_the_token_endpoint_takes_its_latency(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    asked = recording(sandbox)
    status, _ = await settings(http, sandbox, {"latency": {"identity.token": 50}})
    assert status == 200
    await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    assert asked == [0.05]  # one code redeemed, one delay


async def test_a_delayed_request_holds_its_mailbox_slot(
    sandbox: Sandbox, http: aiohttp.ClientSession, requests_session: requests.Session
) -> None:
    signed_in = await sign_in(sandbox, http, requests_session, ["Mail.Send"])
    released = asyncio.Event()
    waiting: list[float] = []

    async def held(seconds: float) -> None:
        waiting.append(seconds)
        await released.wait()

    sandbox.state.sleep = held
    status, _ = await settings(http, sandbox, {"latency": {"graph.sendMail": 200}})
    assert status == 200
    send = sender(http, sandbox, signed_in.access_token)
    first_four = [asyncio.create_task(send()) for _ in range(4)]
    async with asyncio.timeout(30):
        while len(waiting) < 4:
            await asyncio.sleep(0.01)
    # All four slots are held by requests still in their latency: the fifth is refused.
    assert await send() == 429
    assert (await counters(http, sandbox))["graph.throttled.mailbox_concurrency"] == 1
    released.set()
    assert sorted(await asyncio.gather(*first_four)) == [202] * 4
    assert sandbox.state.in_flight == {}


async def test_invalid_rules_are_refused_and_change_nothing(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    status, _ = await settings(http, sandbox, {"latency": {"graph.sendMail": 100}})
    assert status == 200
    for rules in (
        {"graph.sendMail": -1},
        {"graph.sendMail": {"distribution": "uniform", "min": 300, "max": 200}},
        {"graph.sendMail": {"distribution": "pareto", "ms": 1}},
        {"graph.sendMail": "slow"},
    ):
        status, answer = await settings(http, sandbox, {"latency": rules})
        assert status == 400, rules
        assert str(answer["error"]).startswith("invalid latency")
    assert sandbox.state.latency_report() == {
        "graph.sendMail": {"distribution": "fixed", "ms": 100.0}
    }
    status, shown = await settings(http, sandbox, {"latency": {}})
    assert status == 200 and shown["latency"] == {}
