"""The metric names the shipped alert rules and dashboard use, and the names a registry exports.

Both files live in ``config/`` (docs/operations.md); a name they use that the daemon does not
export would leave an alert silent or a panel empty, so tests compare the two sets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import Metric

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "config" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "config" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "config" / "grafana" / "mailbox-worker.json"

NAME = re.compile(r"\bmailbox_worker_[a-z0-9_]*[a-z0-9]")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created"),
    "info": ("_info",),
}


def referenced_metric_names() -> set[str]:
    """Every ``mailbox_worker_…`` name in the alert rules and the dashboard."""
    return {name for path in (ALERTS, DASHBOARD) for name in NAME.findall(path.read_text())}


def exported_names(families: Iterable[Metric]) -> set[str]:
    """The sample names ``families`` can expose, whether or not a sample exists yet (a
    labelled counter has none until it is first counted)."""
    names: set[str] = set()
    for family in families:
        suffixes = SUFFIXES.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
        names.update(sample.name for sample in family.samples)
    return names
