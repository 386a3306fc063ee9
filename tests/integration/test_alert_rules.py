"""The shipped alert rules and dashboard (config/, docs/operations.md): promtool accepts the
rules, their unit tests pass, and every metric name they use is one the daemon exports."""

from __future__ import annotations

import json
import subprocess

from prometheus_client import CollectorRegistry

from mailbox_worker.prometheus import PrometheusTelemetry
from tests.config_metrics import (
    ALERTS,
    ALERTS_TEST,
    DASHBOARD,
    exported_names,
    referenced_metric_names,
)
from tests.tools import promtool


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_accepts_the_rules() -> None:
    checked = run("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_each_alert_fires_on_its_failure_and_not_on_healthy_series() -> None:
    tested = run("test", "rules", str(ALERTS_TEST))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = {
        line.split(":", 1)[1].strip()
        for line in ALERTS.read_text().splitlines()
        if line.strip().startswith("- alert:")
    }
    tests_text = ALERTS_TEST.read_text()
    # Every alert has a case where it fires (expected labels name it through its test).
    untested = {alert for alert in alerts if f"alertname: {alert}" not in tests_text}
    assert untested == set()


def test_the_rules_and_the_dashboard_use_only_exported_names() -> None:
    registry = CollectorRegistry()
    PrometheusTelemetry(registry)
    referenced = referenced_metric_names()
    assert len(referenced) >= 10  # the search found the names, so the comparison means something
    assert referenced - exported_names(registry.collect()) == set()


def test_the_dashboard_is_grafana_json_with_a_query_in_every_panel() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert panels
    for panel in panels:
        expressions = [target["expr"] for target in panel["targets"]]
        assert expressions and all("mailbox_worker_" in e or "up{" in e for e in expressions), (
            panel["title"]
        )
