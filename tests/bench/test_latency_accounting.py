"""A latency run accounts for every record it sent: a routed record that never becomes visible is
an error carrying the count, never a sample quietly left out of the percentiles.

The expected records come from the compiled filters, counted per event; the real router, broker
and registry produce what the reader sees."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from cdcrouter.bench import route as bench
from cdcrouter.bench.stats import MissingRecords
from cdcrouter.route.events import make_event


def test_only_the_measured_window_counts_and_a_missing_record_is_counted() -> None:
    seen = bench.Visible()
    seen.expect(b"u1", 2)
    seen.expect(b"u2", 1)
    seen.expect(b"u3", 0)  # routed nowhere: due no record
    seen.samples.extend([(9, 1, b"warm-up straggler"), (10, 2, b"u1"), (12, 3, b"u2")])
    assert seen.missing() == 1  # u1's second filtered record
    with pytest.raises(MissingRecords) as caught:
        seen.wait_complete("route latency", timeout_s=0.3)
    assert (caught.value.missing, caught.value.expected) == (1, 3)
    seen.samples.append((14, 4, b"u1"))
    seen.wait_complete("route latency", timeout_s=0.3)
    out = seen.summary()
    assert out["expected_records"] == out["visible_records"] == 3
    assert out["max_ms"] == 14  # the straggler (9 ms) is not a sample of this window


def test_event_uuid_reads_the_first_field_of_a_framed_record() -> None:
    from cdcrouter.route.events import encode_raw

    event = make_event(5, seed=11)
    assert bench.event_uuid(encode_raw(event, 42)) == event["eventHeader"]["uuid"].encode()


@pytest.mark.integration
@pytest.mark.stack_services("kafka", "registry")
def test_a_latency_run_sees_every_routed_record(stack: Any) -> None:
    out = bench.latency(stack.connections, rate=200, seconds=1.0, filters=4, partitions=1)
    assert out["expected_records"] > 0
    assert out["visible_records"] == out["expected_records"]
    assert out["p99_ms"] is not None and out["peak_rss_mb"] > 0


@pytest.mark.integration
@pytest.mark.stack_services("kafka", "registry")
def test_records_that_never_become_visible_fail_the_run_with_their_count(
    stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The router dies just before the measured window: none of its records can become visible.
    The old harness waited 2 s and reported percentiles over what it had (here: nothing)."""
    routers: list[subprocess.Popen[bytes]] = []
    start_router, append = bench._router_process, bench.append_paced

    def keep(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        routers.append(start_router(*args, **kwargs))
        return routers[-1]

    def kill_then_append(*args: Any, **kwargs: Any) -> tuple[int, int, float]:
        if kwargs.get("expect") is not None:  # the measured window
            routers[0].kill()
            routers[0].wait(30)
        return append(*args, **kwargs)

    monkeypatch.setattr(bench, "_router_process", keep)
    monkeypatch.setattr(bench, "append_paced", kill_then_append)
    with pytest.raises(MissingRecords) as caught:
        bench.latency(stack.connections, rate=200, seconds=1.0, filters=4, partitions=1, tail_timeout_s=3)
    assert caught.value.expected > 0
    assert caught.value.missing == caught.value.expected
    assert f"{caught.value.missing:,} of {caught.value.expected:,} records were not visible" in str(
        caught.value
    )
