"""A PostgreSQL transaction without events right after one with events (issue #12, finding 4).

The empty one (a TRUNCATE, an UPDATE of an outbox row) used to be taken for the
end of a batch while the previous batch's Kafka commit was still in flight; committing a Kafka
transaction that was never begun failed with "Local: Erroneous state", replaced the producer and
stalled capture for seconds. Only a begun Kafka transaction may be committed.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator

import pytest
from capture_helpers import CaptureRun
from confluent_kafka import Consumer, TopicPartition

pytestmark = pytest.mark.integration

PAIRS = 20


@contextlib.contextmanager
def _tail(run: CaptureRun) -> Iterator[Consumer]:
    """A read_committed consumer at the start of the (one-partition) raw topic."""
    consumer = Consumer(
        {
            **run.conns.kafka.to_librdkafka(),
            "group.id": f"test-{run.topic}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(run.topic, 0, 0)])
    try:
        yield consumer
    finally:
        consumer.close()


def _next_key(consumer: Consumer, deadline_s: float) -> bytes:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        msg = consumer.poll(0.05)
        if msg is not None and not msg.error():
            return msg.key()
    raise AssertionError(f"no event within {deadline_s} s")


def test_empty_transactions_after_events_keep_the_producer(capture_run: CaptureRun) -> None:
    run = capture_run
    # an outbox row becomes an event only when inserted: UPDATEs of it are changes without events
    run.sql("INSERT INTO business_events (event_name, entities) VALUES ('Seeded', '[]')")
    engine = run.start()
    latencies = []
    with _tail(run) as consumer:
        for i in range(PAIRS):
            started = time.monotonic()
            run.sql(
                "INSERT INTO car_entities (id, vin, make, model) VALUES (%s, 'V', 'M', 'X')",
                params=(f"c{i}",),
            )
            if i % 2:
                run.sql("TRUNCATE service_records")
            else:
                run.sql("UPDATE business_events SET event_type = %s", params=(str(i),))
            assert _next_key(consumer, deadline_s=30) == f"c{i}".encode()
            latencies.append(time.monotonic() - started)
    # an event is readable as soon as Kafka commits; the engine counts the commit when its commit
    # thread hands the result back, a moment later
    deadline = time.monotonic() + 10
    while engine.stats.kafka_commits < PAIRS and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.stats.reconnects == 0, "the producer was replaced"
    assert engine.stats.kafka_commits >= PAIRS
    # each pair used to stall ~7 s (a new producer)
    assert statistics.median(latencies) < 1.0, latencies
    assert max(latencies) < 5.0, latencies
    ids = [e["eventBody"]["entities"][0]["entityId"] for e in run.events(expect=PAIRS)]
    assert ids == [f"c{i}" for i in range(PAIRS)]
