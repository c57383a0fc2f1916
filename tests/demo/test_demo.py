"""`cdcrouter demo` end to end on the real stack: every change captured, routed and consumed."""

from __future__ import annotations

import io

import psycopg
import pytest
from rich.console import Console

from cdcrouter.filters import load_filters  # isort: skip  (before the back ends: import cycle)
from cdcrouter.backends.python_eval import compile_filterset
from cdcrouter.demo.report import print_summary
from cdcrouter.demo.runner import DEMO_SLOT, DemoOptions, default_filters_path, run_demo

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "two-hop"])
def test_demo_routes_every_change_to_its_consumers(stack_with, fused):
    stack = stack_with("postgres", "kafka", "registry")
    opts = DemoOptions(changes=400, rate=0, timeout_s=120) if fused else DemoOptions(400, 0, fused=False)
    assert DemoOptions().fused  # the default: capture routes in its own transactions
    result = run_demo(opts, stack.connections)

    assert result.complete, result
    assert result.fused is fused
    assert sum(result.changes_written.values()) >= 400
    assert result.captured == sum(result.changes_written.values())
    assert result.routed_in == result.captured
    assert set(result.routed_out) == {
        "filtered-car-events",
        "filtered-loan-events",
        "filtered-risk-events",
        "filtered-service-events",
    }
    for topic, n in result.routed_out.items():
        assert n > 0, topic
        assert result.consumed[topic] == n, topic
    assert len(result.latencies_ms) == sum(result.consumed.values())
    # each latency splits at filteredAt: routed after the commit, readable after routing
    assert len(result.routed_ms) == len(result.latencies_ms)
    assert all(0 <= r <= t for r, t in zip(result.routed_ms, result.latencies_ms, strict=True))
    split = result.split(0.5)
    assert split is not None and split[0] + split[1] > 0
    assert result.views["loan"] and result.views["car"] and result.views["service"]

    # It ends with `cdcrouter status`'s view, taken while capture and the router still ran.
    st = result.status
    assert st is not None
    assert st["capture"]["slot"] == DEMO_SLOT and st["capture"]["active"] is True
    # fused: no router group reads the raw topic (Flink or a separate router could)
    members = (st["raw_topic"].get("router_group") or {}).get("members")
    assert bool(members) is not fused, st["raw_topic"]
    assert {f["topic"] for f in st["filters"]} == set(result.routed_out)
    out = io.StringIO()
    print_summary(Console(file=out, width=200), result)
    assert "Raw topic raw-business-events" in out.getvalue() and "Dead-letter topics" in out.getvalue()
    assert ("routed by capture (fused mode)" in out.getvalue()) is fused

    # No idle replication slot is left pinning WAL.
    with psycopg.connect(stack.connections.postgres.conninfo()) as conn:
        slots = conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (DEMO_SLOT,))
        assert slots.fetchone() == (0,)


def test_demo_filters_are_valid_and_route_the_workload_events():
    fs = load_filters(default_filters_path())
    router = compile_filterset(fs)
    car_created = {
        "eventHeader": {
            "uuid": "u",
            "eventName": "CarCreated",
            "createdDate": 1,
            "savedDate": 1,
            "eventType": None,
        },
        "eventBody": {"entities": [{"entityType": "Car", "entityId": "car-1", "updatedAttributes": {}}]},
        "sourceMetadata": {"table": "car_entities", "operation": "INSERT", "timestamp": 1},
    }
    assert router.match(car_created) == ["car-changes"]
    big_loan = {
        **car_created,
        "eventHeader": {**car_created["eventHeader"], "eventName": "LoanCreated"},
        "eventBody": {
            "entities": [
                {"entityType": "Loan", "entityId": "l-1", "updatedAttributes": {"loan.loanAmount": "60000"}}
            ]
        },
    }
    assert router.match(big_loan) == ["loan-lifecycle", "large-loans"]
