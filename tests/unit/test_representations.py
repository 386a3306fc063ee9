"""Timestamps in API answers: RFC 3339 UTC with milliseconds and ``Z``, the same text for the
same instant whatever its zone (the text is remembered per instant: api/representations.py)."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from mailbox_worker.api.representations import timestamp


def test_a_time_is_utc_with_milliseconds_and_z() -> None:
    value = dt.datetime(2026, 12, 7, 4, 5, 6, 789_123, tzinfo=dt.UTC)
    assert timestamp(value) == "2026-12-07T04:05:06.789Z"
    assert timestamp(None) is None


def test_the_same_instant_in_other_zones_reads_the_same() -> None:
    value = dt.datetime(2026, 12, 7, 23, 30, tzinfo=dt.UTC)
    ahead = value.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30)))
    behind = value.astimezone(dt.timezone(dt.timedelta(hours=-8)))
    # In either order: whichever is formatted first, the other reads the same text.
    assert timestamp(ahead) == timestamp(value) == timestamp(behind) == "2026-12-07T23:30:00.000Z"
    assert timestamp(value + dt.timedelta(milliseconds=1)) == "2026-12-07T23:30:00.001Z"


def test_a_wall_time_that_occurs_twice_reads_as_each_instant() -> None:
    """Equal as datetimes, but not the same instant: 02:30 on the night Berlin's clocks go
    back is 00:30Z the first time (fold 0) and 01:30Z the second (fold 1), in either order."""
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    first = dt.datetime(2026, 10, 25, 2, 30, tzinfo=berlin)
    second = first.replace(fold=1)
    assert first == second  # what a cache keyed by equality would confuse
    assert timestamp(second) == "2026-10-25T01:30:00.000Z"
    assert timestamp(first) == "2026-10-25T00:30:00.000Z"
    assert timestamp(second) == "2026-10-25T01:30:00.000Z"
