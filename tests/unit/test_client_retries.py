"""The client's retry arithmetic: ``Retry-After`` in both its forms, and the backoff."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailbox_worker.client.retries import RetryPolicy, parse_retry_after

NOW = datetime(2026, 12, 5, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        ("7", 7.0),
        (" 120 ", 120.0),
        ("Sat, 05 Dec 2026 12:00:30 GMT", 30.0),
        ("Sat, 05 Dec 2026 12:02:00 GMT", 120.0),
        ("Sat, 05 Dec 2026 11:59:00 GMT", 0.0),  # already past: go now
        ("Saturday, 05-Dec-26 12:00:10 GMT", 10.0),  # RFC 850, still allowed to be sent
    ],
)
def test_retry_after_in_seconds_or_as_a_date(value: str, seconds: float) -> None:
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5", "Sat, 99 Foo 2026"])
def test_an_unreadable_retry_after_is_none(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


def test_backoff_doubles_between_half_and_all_of_its_ceiling_up_to_the_cap() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_cap=3.0)
    assert [policy.backoff(retry, lambda: 1.0) for retry in (1, 2, 3, 4, 5)] == [
        0.5,
        1.0,
        2.0,
        3.0,
        3.0,
    ]
    assert [policy.backoff(retry, lambda: 0.0) for retry in (1, 2, 3, 4)] == [
        0.25,
        0.5,
        1.0,
        1.5,
    ]


def test_negative_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(max_retries=-1)
