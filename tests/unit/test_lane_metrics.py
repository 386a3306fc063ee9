"""The lanes beside the event loop on the metrics page (``prometheus.LaneCollector``), read
at each scrape: what an operator sees of the costly checks' lane filling up."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mailbox_worker.lanes import Lane, LaneFull
from mailbox_worker.prometheus import LaneCollector, PrometheusTelemetry
from tests.lanes_harness import occupy


def test_every_lane_of_the_process_is_on_the_page() -> None:
    registry = CollectorRegistry()
    PrometheusTelemetry(registry)
    page = generate_latest(registry).decode()

    for lane in ("costly-checks", "costly-builds"):
        assert f'mailbox_worker_lane_works{{lane="{lane}"}}' in page
        assert f'mailbox_worker_lane_bytes{{lane="{lane}"}}' in page
        assert f'mailbox_worker_lane_refusals_total{{lane="{lane}"}}' in page


async def test_a_lanes_works_bytes_and_refusals_are_read_at_each_scrape() -> None:
    lane = Lane("test-lane", admits_bytes=5)
    registry = CollectorRegistry()
    registry.register(LaneCollector([lane]))
    labels = {"lane": "test-lane"}

    def sample(name: str) -> float | None:
        return registry.get_sample_value(name, labels)

    gate = threading.Event()
    held = await occupy(lane, gate, size=5)
    with pytest.raises(LaneFull):
        await lane.run(lambda: None, size=1)

    assert sample("mailbox_worker_lane_works") == 1
    assert sample("mailbox_worker_lane_bytes") == 5
    assert sample("mailbox_worker_lane_refusals_total") == 1
    gate.set()
    assert await held
    assert sample("mailbox_worker_lane_works") == 0
    assert sample("mailbox_worker_lane_bytes") == 0
    assert sample("mailbox_worker_lane_refusals_total") == 1
