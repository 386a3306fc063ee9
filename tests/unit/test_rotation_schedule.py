"""The rotation schedule alone: when a key is due for rotation and for retirement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailbox_worker.tokens.keys.port import KeyInfo
from mailbox_worker.tokens.keys.times import KeyTimes
from mailbox_worker.tokens.rotation import RotationSchedule

CREATED = datetime(2025, 1, 1, 9, 0, tzinfo=UTC)
SCHEDULE = RotationSchedule(rotate_every=timedelta(days=30), grace=timedelta(hours=24))


def test_settings_build_the_schedule_and_zero_days_turns_it_off() -> None:
    assert RotationSchedule.from_settings(30, 24) == SCHEDULE
    assert RotationSchedule.from_settings(0, 24) is None


def test_the_active_key_is_due_rotate_every_after_its_creation() -> None:
    active = KeyInfo("kek-20250101-00000000", True, KeyTimes(CREATED))
    assert SCHEDULE.rotation_due_at(active) == CREATED + timedelta(days=30)
    assert SCHEDULE.retirement_due_at(active) is None
    assert SCHEDULE.rotation_due_at(KeyInfo("legacy", True, KeyTimes())) is None


def test_a_superseded_key_is_retirable_grace_after_its_supersession() -> None:
    superseded = CREATED + timedelta(days=30)
    old = KeyInfo("kek-20250101-00000000", False, KeyTimes(CREATED, superseded))
    assert SCHEDULE.retirement_due_at(old) == superseded + timedelta(hours=24)
    assert SCHEDULE.retirement_due_at(KeyInfo("legacy", False, KeyTimes(CREATED))) is None


@pytest.mark.parametrize(
    ("every", "grace"), [(timedelta(0), timedelta(hours=1)), (timedelta(days=1), timedelta(-1))]
)
def test_a_schedule_needs_a_positive_period_and_a_grace(every: timedelta, grace: timedelta) -> None:
    with pytest.raises(ValueError, match="rotate_every"):
        RotationSchedule(every, grace)
