"""A capture whose producer is fenced by a second instance replaces its producer and goes on.

A second `cdcrouter capture run` of the same pipeline (a deploy that started the new process
before the old one stopped) fences the running capture's transactional id while it waits for
the slot. The running capture used to die on its next commit with a bare KafkaException
traceback (`_FENCED`, raised by the producer's poll while reporting the failure) instead of
replacing its producer as docs/capture.md (Exactly once, point 6) says.
"""

from __future__ import annotations

import pytest
from capture_helpers import CaptureRun
from confluent_kafka import Producer

from cdcrouter.capture.sink import capture_ids

pytestmark = pytest.mark.integration


def test_fenced_capture_replaces_its_producer_and_loses_nothing(capture_run: CaptureRun) -> None:
    run = capture_run
    engine = run.start()
    run.sql("INSERT INTO car_entities (id, vin, make, model) VALUES ('a', 'V', 'M', 'X')")
    assert len(run.events(expect=1)) == 1
    newer = Producer(
        {**run.conns.kafka.to_librdkafka(), "transactional.id": capture_ids(run.pipeline.replication.slot)[0]}
    )
    newer.init_transactions(30)  # what a second instance does at start-up: the running one is fenced
    run.sql("INSERT INTO car_entities (id, vin, make, model) VALUES ('b', 'V', 'M', 'Y')")
    events = run.events(expect=2, timeout_s=60)
    _engine, thread, _stop = run.engines[0]
    assert thread.is_alive(), f"capture died: {engine.errors!r}"  # type: ignore[attr-defined]
    ids = [e["eventBody"]["entities"][0]["entityId"] for e in events]
    assert ids == ["a", "b"], ids  # the change after the fencing arrives, exactly once
    assert engine.stats.reconnects >= 1
