"""Unit: the latency benchmark's pre-encoded events are the events it claims to send."""

from __future__ import annotations

import time
from types import SimpleNamespace

from cdcrouter.capture.avro_fast import encode_long
from cdcrouter.route import bench
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
