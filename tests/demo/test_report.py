"""The demo's summary reports a latency only over every routed event, never over a subset."""

from __future__ import annotations

import io
from collections import Counter

from rich.console import Console

from cdcrouter.demo.report import print_summary
from cdcrouter.demo.runner import DemoResult


def _summary(result: DemoResult) -> str:
    out = io.StringIO()
    print_summary(Console(file=out, width=200), result)
    return out.getvalue()


def _result(consumed: int, complete: bool) -> DemoResult:
    return DemoResult(
        run_id="r1",
        changes_written=Counter({"car_entities": 10}),
        transactions=2,
        captured=10,
        routed_in=10,
        routed_out={"filtered-car-events": 10},
        consumed={"filtered-car-events": consumed},
        latencies_ms=[float(20 + i) for i in range(consumed)],
        complete=complete,
    )


def test_an_incomplete_run_reports_the_missing_count_and_no_percentiles() -> None:
    text = _summary(_result(consumed=7, complete=False))
    assert "latency not reported: 3 of 10 routed events never became readable" in text
    assert "p99" not in text


def test_a_complete_run_reports_its_percentiles_over_every_event() -> None:
    text = _summary(_result(consumed=10, complete=True))
    assert "p50 24 ms, p99 29 ms over 10 events" in text  # 20..29: p50 24.5, p99 28.91 (rounded)
    assert "latency not reported" not in text
