"""The shipped alert rules and dashboard, checked by Prometheus's own promtool: the rules parse, their
unit tests (monitoring/prometheus/alerts.test.yml) pass and can fail, and every dashboard query is
valid PromQL. In CI (CI=true) a promtool that cannot be installed fails the tests instead of
skipping them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from .monitoring_files import ALERT_TESTS, ALERTS, SCRAPE_CONFIG, alert_rules, dashboard_exprs
from .promtool import find_promtool


@pytest.fixture(scope="session")
def promtool() -> str:
    path, why = find_promtool()
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"promtool is required in CI: {why}")
        pytest.skip(why)
    return path


def _run(promtool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [promtool, *args]
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


def test_alert_rules_and_scrape_config_are_valid(promtool: str) -> None:
    checked = _run(promtool, "check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout
    config = _run(promtool, "check", "config", "--syntax-only", str(SCRAPE_CONFIG))
    assert config.returncode == 0, config.stdout + config.stderr


def test_alert_rule_unit_tests_pass(promtool: str) -> None:
    tested = _run(promtool, "test", "rules", str(ALERT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    doc = YAML(typ="safe").load(ALERT_TESTS.read_text())
    fired = {
        case["alertname"]
        for test in doc["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert fired == {rule["alert"] for rule in alert_rules()}


def test_the_unit_tests_fail_when_a_threshold_is_broken(promtool: str, tmp_path: Path) -> None:
    """The tests guard the thresholds: 5 GiB of retained WAL raised to 500 GiB makes them fail."""
    rules, threshold = ALERTS.read_text(), "> 5 * 1024 * 1024 * 1024"
    assert threshold in rules
    (tmp_path / ALERTS.name).write_text(rules.replace(threshold, "> 500 * 1024 * 1024 * 1024"))
    (tmp_path / ALERT_TESTS.name).write_text(ALERT_TESTS.read_text())
    tested = _run(promtool, "test", "rules", ALERT_TESTS.name, cwd=tmp_path)
    assert tested.returncode != 0
    assert "CdcrouterSlotWalRetainedHigh" in tested.stdout + tested.stderr


def test_every_dashboard_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Each panel's query as a recording rule, so promtool parses it (Grafana's $__rate_interval
    replaced by 5m)."""
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    rules = [{"record": f"cdcrouter:dashboard:{i}", "expr": e} for i, e in enumerate(exprs.values())]
    path = tmp_path / "dashboard_rules.yml"
    with path.open("w") as fh:
        YAML(typ="safe").dump({"groups": [{"name": "dashboard", "rules": rules}]}, fh)
    checked = _run(promtool, "check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
