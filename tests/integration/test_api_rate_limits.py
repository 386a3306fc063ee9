"""Rate limits through the real application on a socket: 429 with ``Retry-After`` per API key,
the brake on repeated bad keys from one address, and what is never limited. Time moves by the
harness's clock, never by sleeping; the rates are slow enough (a token every 10 s) that the
little real time the requests take changes no answer. Exact arithmetic: tests/unit."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailbox_worker.api.rate_limits import RateLimitSettings
from tests.integration.api_harness import RunningApi, running_api

BURST = 5
LIMITS = RateLimitSettings(
    rate_limit_per_second=0.1,
    rate_limit_burst=BURST,
    failed_auth_limit=3,
    failed_auth_window=60.0,
    failed_auth_penalty=30.0,
    failed_auth_max_penalty=120.0,
)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[RunningApi]:
    async with running_api(tmp_path, rate_limits=LIMITS) as running:
        yield running


def refusals(api: RunningApi, reason: str) -> float | None:
    return api.registry.get_sample_value(
        "mailbox_worker_api_rate_limited_total", {"reason": reason}
    )


async def test_a_key_over_its_burst_is_answered_429_with_retry_after(api: RunningApi) -> None:
    _, key = await api.account_with_key()

    statuses = [(await api.call("GET", "/v1/mailboxes", key=key)).status for _ in range(BURST)]
    refused = await api.call("GET", "/v1/jobs", key=key)

    assert statuses == [200] * BURST
    assert (refused.status, refused.error_code) == (429, "rate_limited"), refused.body
    assert 1 <= int(refused.headers["Retry-After"]) <= 10
    assert refusals(api, "rate_limited") == 1
    assert refusals(api, "too_many_failed_attempts") == 0


async def test_another_key_is_not_slowed_by_a_busy_one(api: RunningApi) -> None:
    account_id, busy = await api.account_with_key()
    calm = await api.key_for(account_id, frozenset({"mailboxes:read"}))
    for _ in range(BURST):
        await api.call("GET", "/v1/mailboxes", key=busy)
    assert (await api.call("GET", "/v1/mailboxes", key=busy)).status == 429

    assert (await api.call("GET", "/v1/mailboxes", key=calm)).status == 200


async def test_a_key_is_served_again_once_time_has_refilled_its_bucket(api: RunningApi) -> None:
    _, key = await api.account_with_key()
    for _ in range(BURST):
        await api.call("GET", "/v1/mailboxes", key=key)
    refused = await api.call("GET", "/v1/mailboxes", key=key)
    assert refused.status == 429

    api.clock.advance(dt.timedelta(seconds=int(refused.headers["Retry-After"])))

    assert (await api.call("GET", "/v1/mailboxes", key=key)).status == 200
    assert (await api.call("GET", "/v1/mailboxes", key=key)).status == 429


async def test_repeated_bad_keys_from_one_address_are_slowed_then_let_through(
    api: RunningApi,
) -> None:
    _, good = await api.account_with_key()
    bad = [(await api.call("GET", "/v1/jobs", key=f"mwk_guess{n}_secret")).status for n in range(3)]

    penalised = await api.call("GET", "/v1/jobs", key=good)

    assert bad == [401, 401, 401]
    assert (penalised.status, penalised.error_code) == (429, "too_many_failed_attempts")
    assert penalised.headers["Retry-After"] == "30"
    assert "WWW-Authenticate" not in penalised.headers
    assert refusals(api, "too_many_failed_attempts") == 1
    api.clock.advance(dt.timedelta(seconds=29))
    assert (await api.call("GET", "/v1/jobs", key=good)).headers["Retry-After"] == "1"

    api.clock.advance(dt.timedelta(seconds=1))

    assert (await api.call("GET", "/v1/jobs", key=good)).status == 200


async def test_the_penalty_grows_when_bad_keys_come_again(api: RunningApi) -> None:
    penalties = []
    for _ in range(3):
        for _ in range(3):
            await api.call("GET", "/v1/account", key="mwk_guess_secret")
        answer = await api.call("GET", "/v1/account", key="mwk_guess_secret")
        assert answer.status == 429
        penalties.append(int(answer.headers["Retry-After"]))
        api.clock.advance(dt.timedelta(seconds=penalties[-1]))

    assert penalties == [30, 60, 120]


async def test_requests_without_a_key_are_not_counted_as_bad_keys(api: RunningApi) -> None:
    statuses = {(await api.call("GET", "/v1/jobs")).status for _ in range(10)}

    assert statuses == {401}


async def test_operations_endpoints_are_never_limited(api: RunningApi) -> None:
    for n in range(3):
        await api.call("GET", "/v1/jobs", key=f"mwk_guess{n}_secret")
    assert (await api.call("GET", "/v1/jobs")).status == 429  # this address is penalised

    statuses = {
        (await api.call("GET", path)).status
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json")
        for _ in range(BURST + 2)
    }

    assert statuses == {200}
