"""The shipped monitoring files (monitoring/): their PromQL expressions and the metric names in them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
ALERTS = MONITORING / "prometheus" / "alerts.yml"
ALERT_TESTS = MONITORING / "prometheus" / "alerts.test.yml"
SCRAPE_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
DASHBOARD = MONITORING / "grafana" / "cdcrouter-pipeline.json"

# Every cdcrouter metric is prefixed; `up` is Prometheus's own (one per scrape target).
_METRIC = re.compile(r"\b(cdcrouter_[a-zA-Z0-9_]+)")
# Grafana's interval variables, replaced by a fixed range so promtool can parse the expressions.
_GRAFANA_VARS = re.compile(r"\$__(rate_interval|interval|range)")


def alert_rules() -> list[dict[str, Any]]:
    doc = YAML(typ="safe").load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> dict[str, str]:
    """``panel title / refId`` -> PromQL, Grafana variables replaced by ``5m``."""
    doc = json.loads(DASHBOARD.read_text())
    out = {}
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            out[f"{panel['title']} / {target['refId']}"] = _GRAFANA_VARS.sub("5m", target["expr"])
    return out


def metric_names(expr: str) -> set[str]:
    return set(_METRIC.findall(expr))


def used_metric_names() -> dict[str, set[str]]:
    """metric name -> where it is used (alert names, dashboard panels)."""
    used: dict[str, set[str]] = {}
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            used.setdefault(name, set()).add(f"alert {rule['alert']}")
    for where, expr in dashboard_exprs().items():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(f"panel {where}")
    return used
