"""bench.stats: the one percentile definition, repeated runs, peak RSS, record accounting.

The oracle for percentiles is the standard library (``statistics.quantiles``, inclusive method:
the same linear interpolation numpy uses by default) and values worked out by hand."""

from __future__ import annotations

import os
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdcrouter.bench import stats


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([10, 20, 30, 40], 50, 25.0),  # h = 1.5: halfway between 20 and 30
        ([10, 20, 30, 40], 99, 39.7),  # h = 2.97
        ([10, 20, 30, 40], 0, 10.0),
        ([10, 20, 30, 40], 100, 40.0),
        ([40, 10, 30, 20], 25, 17.5),  # unsorted input; h = 0.75
        ([7], 99, 7.0),
        (list(range(1, 101)), 99, 99.01),  # h = 98.01
    ],
)
def test_percentile_by_hand(values: list[int], p: float, expected: float) -> None:
    assert stats.percentile(values, p) == pytest.approx(expected)


@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=200), st.integers(1, 99))
def test_percentile_agrees_with_statistics_quantiles(values: list[float], p: int) -> None:
    oracle = statistics.quantiles(values, n=100, method="inclusive")[p - 1]
    assert stats.percentile(values, p) == pytest.approx(oracle, rel=1e-9, abs=1e-6)


def test_percentile_of_nothing_is_none_and_out_of_range_is_refused() -> None:
    assert stats.percentile([], 50) is None
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)


def test_repeat_reports_median_and_range_load_and_peak_rss() -> None:
    figures = iter([30.0, 10.0, 20.0])
    out = stats.repeat(
        lambda: {"benchmark": "x", "filters": 20, "rows": 5, "events_per_s": next(figures)}, runs=3
    )
    assert out["runs"] == 3 and out["benchmark"] == "x" and out["filters"] == 20
    assert out["rows"] == 5  # a result's own field is never overwritten by the summary's
    assert out["events_per_s"] == {"median": 20.0, "min": 10.0, "max": 30.0}
    assert len(out["each_run"]) == 3
    for row in out["each_run"]:
        assert row["load_1m"] >= 0 and row["peak_rss_mb"] > 0
    assert "load_1m" in out  # a range when the load moved between the runs, else the one value


def test_repeat_keeps_a_peak_rss_the_run_measured_itself_and_merges_nested_results() -> None:
    rows = iter(
        [{"embedded": {"p99_ms": 5}, "peak_rss_mb": 99.0}, {"embedded": {"p99_ms": 7}, "peak_rss_mb": 98.0}]
    )
    out = stats.repeat(lambda: next(rows), runs=2)
    assert out["peak_rss_mb"] == {"median": 98.5, "min": 98.0, "max": 99.0}
    assert out["embedded"]["p99_ms"] == {"median": 6.0, "min": 5, "max": 7}


def test_peak_rss_of_one_run_is_its_own_after_a_reset() -> None:
    """A 200 MB allocation shows in the peak, and a reset forgets it once it is freed."""
    before = stats.peak_rss_mb()
    assert before is not None
    block = bytearray(200 * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])  # touch every page: resident, not just reserved
    assert stats.peak_rss_mb() >= before + 150
    del block
    assert stats.reset_peak_rss()
    assert stats.peak_rss_mb() < before + 100


def test_peak_rss_of_another_process_and_of_a_gone_one() -> None:
    assert stats.peak_rss_mb(os.getpid()) is not None
    assert stats.peak_rss_mb(2**22 + 12345) is None


def test_a_missing_record_is_an_error_with_the_count() -> None:
    arrived = iter([90, 95, 97])
    with pytest.raises(stats.MissingRecords) as caught:
        stats.wait_for_all("route latency", lambda: next(arrived, 97), expected=100, timeout_s=0.2)
    assert caught.value.missing == 3 and caught.value.expected == 100
    assert "3 of 100 records were not visible" in caught.value.message
    stats.wait_for_all("route latency", lambda: 100, expected=100, timeout_s=0.2)  # all there: no error
