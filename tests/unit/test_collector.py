"""``serve`` settles the garbage collector once started: what startup built is frozen (the
collections that follow skip it) and the youngest generation is collected less often; cycles
made afterwards are still collected, by the collector's own runs."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from mailbox_worker.cli.collector import YOUNG_THRESHOLD, settle_after_startup


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Node:
    def __init__(self) -> None:
        self.partner: Node | None = None


@pytest.mark.usefixtures("restored_collector")
def test_startup_objects_are_frozen_and_the_young_threshold_raised() -> None:
    middle, old = gc.get_threshold()[1:]
    kept = [{"built": "at startup"}]
    settle_after_startup()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, old)
    assert YOUNG_THRESHOLD > 700  # CPython's default
    assert kept  # still here: frozen, not freed


@pytest.mark.usefixtures("restored_collector")
def test_cycles_made_after_startup_are_still_collected() -> None:
    settle_after_startup()
    first, second = Node(), Node()
    first.partner, second.partner = second, first
    watch = weakref.ref(first)
    del first, second
    assert watch() is not None  # a cycle: reference counting alone does not free it
    # The collector runs by itself once enough containers were made (no gc.collect() here).
    alive: list[list[int]] = [[] for _ in range(3 * YOUNG_THRESHOLD)]
    assert watch() is None
    assert len(alive) == 3 * YOUNG_THRESHOLD
