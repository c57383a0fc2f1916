"""A capture whose producer is fenced by a second instance replaces its producer and goes on.

A second `cdcrouter capture run` of the same pipeline (a deploy that started the new process
before the old one stopped) fences the running capture's transactional id while it waits for
the slot. The running capture used to die on its next commit with a bare KafkaException
traceback (`_FENCED`, raised by the producer's poll while reporting the failure) instead of
replacing its producer as docs/capture.md (Exactly once, point 6) says.
"""

from __future__ import annotations

import threading
import time

import pytest
from capture_helpers import CaptureRun
from confluent_kafka import Producer

from cdcrouter.capture import CaptureEngine
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


def test_a_second_capture_of_the_slot_says_so_and_the_first_goes_on(capture_run: CaptureRun) -> None:
    """The real second instance: it fences the first at start, then waits for the slot. Its log
    used to say "PostgreSQL not reachable (... slot ... in use ...)"; now it names the other
    capture. The first keeps streaming, exactly once."""
    run = capture_run
    first = run.start()
    second_says: list[str] = []
    second = CaptureEngine(run.pipeline, run.conns, progress=second_says.append)
    stop = threading.Event()
    thread = threading.Thread(target=lambda: second.run(stop), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not any("in use by another process" in m for m in second_says):
            assert time.monotonic() < deadline and thread.is_alive(), second_says
            time.sleep(0.2)
        waiting = next(m for m in second_says if "in use by another process" in m)
        assert "not reachable" not in waiting and "only one capture may run per slot" in waiting, waiting
        run.sql("INSERT INTO car_entities (id, vin, make, model) VALUES ('c', 'V', 'M', 'Z')")
        events = run.events(expect=1, timeout_s=60)
        assert [e["eventBody"]["entities"][0]["entityId"] for e in events] == ["c"]
        _engine, first_thread, _stop = run.engines[0]
        assert first_thread.is_alive(), f"the first capture died: {first.errors!r}"  # type: ignore[attr-defined]
    finally:
        stop.set()
        thread.join(60)
