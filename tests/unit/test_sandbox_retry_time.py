"""The sandbox's Gmail "Retry after" moment (docs/providers.md D4): to the millisecond, never
before the moment the retry succeeds."""

from __future__ import annotations

import datetime as dt

from mailbox_worker.sandbox.google.gmail_errors import retry_time

MOMENT = dt.datetime(2024, 11, 12, 11, 16, 42, 247000, tzinfo=dt.UTC).timestamp()


def test_a_moment_between_milliseconds_is_named_by_the_next_one() -> None:
    assert retry_time(MOMENT + 0.0004) == "2024-11-12T11:16:42.248Z"
    assert retry_time(MOMENT + 0.0009) == "2024-11-12T11:16:42.248Z"
    assert retry_time(MOMENT + 0.7531) == "2024-11-12T11:16:43.001Z"


def test_a_whole_millisecond_is_named_as_it_is() -> None:
    assert retry_time(MOMENT) == "2024-11-12T11:16:42.247Z"
    whole_second = dt.datetime(2024, 11, 12, 11, 2, tzinfo=dt.UTC).timestamp()
    assert retry_time(whole_second) == "2024-11-12T11:02:00.000Z"
