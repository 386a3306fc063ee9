"""``new_id``: ordered by the time it was made, apart by its random part."""

from __future__ import annotations

import time

import pytest

from mailbox_worker.clock import new_id

MILLISECOND = 1_000_000


def made_at(monkeypatch: pytest.MonkeyPatch, milliseconds: int, count: int = 1) -> list[str]:
    monkeypatch.setattr(time, "time_ns", lambda: milliseconds * MILLISECOND + 123_456)
    return [new_id("job") for _ in range(count)]


def test_the_first_twelve_digits_are_the_time_in_milliseconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (made,) = made_at(monkeypatch, 1_765_000_000_123)
    prefix, _, digits = made.partition("_")
    assert prefix == "job"
    assert len(digits) == 32
    assert digits[:12] == f"{1_765_000_000_123:012x}"
    int(digits, 16)


def test_ids_sort_in_the_order_they_were_made(monkeypatch: pytest.MonkeyPatch) -> None:
    start = 1_765_000_000_000
    made = [made_at(monkeypatch, start + step)[0] for step in (0, 1, 2, 1_000, 86_400_000)]
    assert sorted(made) == made


def test_ids_made_in_the_same_millisecond_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    made = made_at(monkeypatch, 1_765_000_000_000, count=1000)
    assert len(set(made)) == 1000
    assert len({each[-20:] for each in made}) == 1000
