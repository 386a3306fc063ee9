"""The rate limits' arithmetic: token buckets, penalties for bad keys, and their bounds."""

from __future__ import annotations

import datetime as dt

import pytest

from mailbox_worker.api.rate_limits import (
    ApiRateLimits,
    FailedAttempts,
    RateLimitSettings,
    TokenBuckets,
    client_address,
)
from mailbox_worker.errors import TooManyRequests


class SteppedClock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def test_a_bucket_allows_its_burst_then_says_how_long_to_wait() -> None:
    buckets = TokenBuckets(per_second=2.0, burst=3, max_tracked=10)

    assert [buckets.take("key_a", 0.0) for _ in range(3)] == [None, None, None]
    assert buckets.take("key_a", 0.0) == 1  # half a second, rounded up to a whole one
    assert buckets.take("key_a", 0.5) is None  # one token back after 1/2 s
    assert buckets.take("key_a", 0.5) == 1


def test_a_slow_bucket_answers_the_whole_seconds_until_its_next_token() -> None:
    buckets = TokenBuckets(per_second=0.1, burst=1, max_tracked=10)

    assert buckets.take("key_a", 0.0) is None
    assert buckets.take("key_a", 0.0) == 10
    assert buckets.take("key_a", 7.5) == 3


def test_a_bucket_refills_no_further_than_its_burst() -> None:
    buckets = TokenBuckets(per_second=10.0, burst=2, max_tracked=10)

    allowed = [buckets.take("key_a", 3600.0) is None for _ in range(3)]

    assert allowed == [True, True, False]


def test_buckets_are_per_key() -> None:
    buckets = TokenBuckets(per_second=1.0, burst=1, max_tracked=10)

    assert buckets.take("key_a", 0.0) is None
    assert buckets.take("key_a", 0.0) == 1
    assert buckets.take("key_b", 0.0) is None


def test_buckets_remember_at_most_max_tracked_keys_the_least_recent_forgotten() -> None:
    buckets = TokenBuckets(per_second=1.0, burst=1, max_tracked=2)
    buckets.take("key_a", 0.0)
    buckets.take("key_b", 0.0)
    buckets.take("key_a", 0.0)  # key_a is now the most recently seen

    buckets.take("key_c", 0.0)

    assert len(buckets) == 2
    assert buckets.take("key_a", 0.0) == 1  # still remembered: empty
    assert buckets.take("key_b", 0.0) is None  # forgotten: a full bucket again


SETTINGS = RateLimitSettings(
    failed_auth_limit=3,
    failed_auth_window=60.0,
    failed_auth_penalty=10.0,
    failed_auth_max_penalty=25.0,
    max_tracked=100,
)


def test_an_address_is_penalised_at_the_limit_within_the_window() -> None:
    failures = FailedAttempts(SETTINGS)
    for second in (0.0, 1.0):
        failures.record("192.0.2.1", second)
        assert failures.penalty("192.0.2.1", second) is None

    failures.record("192.0.2.1", 2.0)

    assert failures.penalty("192.0.2.1", 2.0) == 10
    assert failures.penalty("192.0.2.1", 11.5) == 1
    assert failures.penalty("192.0.2.1", 12.0) is None
    assert failures.penalty("198.51.100.7", 2.0) is None  # another address is not concerned


def test_failures_spread_over_more_than_the_window_earn_no_penalty() -> None:
    failures = FailedAttempts(SETTINGS)
    for second in (0.0, 40.0, 80.0, 120.0):
        failures.record("192.0.2.1", second)

    assert failures.penalty("192.0.2.1", 120.0) is None


def test_the_penalty_doubles_each_time_up_to_its_bound_and_is_forgotten_after_quiet() -> None:
    failures = FailedAttempts(SETTINGS)
    now = 0.0
    penalties = []
    for _ in range(3):
        for _ in range(3):
            failures.record("192.0.2.1", now)
        penalties.append(failures.penalty("192.0.2.1", now))
        now += 30.0  # past each penalty, within the quiet time that forgets it
    assert penalties == [10, 20, 25]

    now += SETTINGS.failed_auth_max_penalty
    for _ in range(3):
        failures.record("192.0.2.1", now)
    assert failures.penalty("192.0.2.1", now) == 10


def test_failed_attempts_remember_at_most_max_tracked_addresses() -> None:
    failures = FailedAttempts(RateLimitSettings(failed_auth_limit=2, max_tracked=3))
    for number in range(10):
        failures.record(f"192.0.2.{number}", 0.0)

    assert len(failures) == 3


@pytest.mark.parametrize(
    ("remote", "counted_as"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        (None, "unknown"),
    ],
)
def test_a_client_is_counted_by_its_address_or_its_ipv6_64(
    remote: str | None, counted_as: str
) -> None:
    assert client_address(remote) == counted_as


def test_the_limits_raise_429_with_the_code_and_retry_after() -> None:
    clock = SteppedClock()
    limits = ApiRateLimits(
        RateLimitSettings(rate_limit_per_second=1.0, rate_limit_burst=1, failed_auth_limit=1),
        clock,
    )
    limits.admit("key_a")
    with pytest.raises(TooManyRequests) as over_rate:
        limits.admit("key_a")
    limits.failed("192.0.2.1")
    with pytest.raises(TooManyRequests) as penalised:
        limits.check_address("192.0.2.1")

    assert (over_rate.value.status, over_rate.value.code) == (429, "rate_limited")
    assert over_rate.value.retry_after == 1
    assert (penalised.value.code, penalised.value.retry_after) == ("too_many_failed_attempts", 10)
    clock.advance(10)
    limits.check_address("192.0.2.1")  # the penalty is over
    limits.admit("key_a")  # and the bucket has a token again


def test_zero_turns_each_limit_off() -> None:
    limits = ApiRateLimits(
        RateLimitSettings(rate_limit_per_second=0, failed_auth_limit=0), SteppedClock()
    )
    for _ in range(1000):
        limits.admit("key_a")
        limits.failed("192.0.2.1")
    limits.check_address("192.0.2.1")


def test_a_persistent_guesser_stays_at_the_bounded_penalty() -> None:
    failures = FailedAttempts(SETTINGS)
    now = 0.0
    for _ in range(2000):  # more doublings than a float holds
        for _ in range(3):
            failures.record("192.0.2.1", now)
        assert failures.penalty("192.0.2.1", now) in (10, 20, 25)
        now += 25.0

    assert failures.penalty("192.0.2.1", now - 25.0) == 25
