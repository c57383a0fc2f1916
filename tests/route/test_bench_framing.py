"""Unit: the latency benchmark's pre-encoded events are the events it claims to send."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from cdcrouter.bench import route as bench
from cdcrouter.capture.avro_fast import encode_long
from cdcrouter.route.events import encode_raw, make_event


def test_a_pre_encoded_event_with_its_saved_date_written_late_is_the_encoded_event() -> None:
    s = SimpleNamespace(raw_schema_id=42)
    for i in (0, 7, 1234):
        head, tail, _ = bench._with_saved_date_slot(s, i)  # type: ignore[arg-type]
        later = time.time_ns() // 1_000_000 + 5_000
        value = head + encode_long(later) + tail
        event = make_event(i, seed=11)
        event["eventHeader"]["savedDate"] = later
        assert value == encode_raw(event, 42)
        assert bench.saved_date(value) == later


def test_filtered_at_reads_the_last_field_of_a_fully_encoded_filtered_record() -> None:
    from cdcrouter.route.codec import encode_filtered
    from cdcrouter.route.wire import header

    for i, at in ((0, 1_795_590_000_123), (3, 1_000), (9, 1_795_590_000_000 + 2**20)):
        event = make_event(i, seed=11)
        event["eventHeader"]["savedDate"] = at - 17
        meta = {"filterId": f"f{i}", "consumerId": "c", "filteredAt": at}
        value = header(7) + encode_filtered(event, meta)
        assert bench.filtered_at(value) == at
        assert bench.saved_date(value) == at - 17


def test_the_latency_summary_splits_each_record_at_routing() -> None:
    seen = bench.Visible()
    seen.samples.extend([(40, 10, b"a"), (60, 15, b"b"), (50, 30, b"c")])
    out = seen.summary()
    assert out["visible_records"] == 3
    assert out["p50_ms"] == 50.0
    assert out["append_to_routed_p50_p99_ms"] == [15.0, pytest.approx(29.7)]  # 15 + 0.98 * (30 - 15)
    assert out["routed_to_visible_p50_p99_ms"] == [30.0, pytest.approx(44.7)]  # of 20, 30, 45
    seen.clear()
    assert seen.summary()["p50_ms"] is None
