"""The capture producer's librdkafka queue is bounded (#17 item 6), and a full queue only makes capture
wait: every change still arrives exactly once, the position commits, nothing is retried in a loop.

The queue is shrunk to 10 records so that every transaction of 500 changes fills it many times,
including at the moment the position record is produced (which raised BufferError before the
commit path waited). The oracle is PostgreSQL: which rows were written.
"""

from __future__ import annotations

import pytest
from capture_helpers import CaptureRun

from cdcrouter.capture import sink
from cdcrouter.capture.sink import TransactionalSink, read_offsets

pytestmark = pytest.mark.integration

ROWS = 500


def test_the_default_bounds_keep_capture_small() -> None:
    # a full queue of the largest default batch stays far below the 300 MB steady-state budget
    assert sink.QUEUE_MAX_KBYTES * 1024 <= 100 * 2**20
    assert 20_000 <= sink.QUEUE_MAX_MESSAGES <= 200_000


def test_a_full_queue_waits_and_loses_nothing(
    capture_run: CaptureRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TransactionalSink, "QUEUE_MAX_MESSAGES", 10)
    run = capture_run
    engine = run.start()
    run.sql(
        "INSERT INTO car_entities (id, vin, make, model) "
        f"SELECT 'q' || g, 'V', 'M', 'X' FROM generate_series(1, {ROWS}) g"
    )
    run.sql("UPDATE car_entities SET color = 'blue' WHERE id LIKE 'q%'")
    events = run.events(expect=2 * ROWS, timeout_s=60)
    ids = [(e["eventBody"]["entities"][0]["entityId"], e["eventHeader"]["eventName"]) for e in events]
    assert len(ids) == len(set(ids)) == 2 * ROWS, "a change is missing or repeated"
    assert {i for i, _ in ids} == {f"q{g}" for g in range(1, ROWS + 1)}
    run.stop()
    assert engine.stats.reconnects == 0, "a full queue was treated as a Kafka failure"
    position = read_offsets(run.conns, run.pipeline.raw_topic.offsets_topic, run.pipeline.replication.slot)
    assert position is not None and position.events_total >= 2 * ROWS
