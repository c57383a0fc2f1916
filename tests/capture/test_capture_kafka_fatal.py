"""A Kafka error no retry can fix stops capture with the cause and a hint (issue #12, finding 2).

The raw topic deleted under a running capture (auto-creation is off): the engine used to replace
its producer again and again for two minutes and then exit with a generic Kafka error. Now the
refused delivery is recognised as permanent, and capture stops naming the missing topic.
"""

from __future__ import annotations

import time

import pytest
from capture_helpers import CaptureRun
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from cdcrouter.capture.kafka_limits import KafkaFatal

pytestmark = pytest.mark.integration


def test_deleted_raw_topic_stops_capture_with_a_hint(capture_run: CaptureRun) -> None:
    run = capture_run
    engine = run.start()
    run.sql("INSERT INTO car_entities (id, vin, make, model) VALUES ('a', 'V', 'M', 'X')")
    assert len(run.events(expect=1)) == 1
    admin = AdminClient(run.conns.kafka.to_librdkafka())
    admin.delete_topics([run.topic])[run.topic].result(timeout=30)
    started = time.monotonic()
    run.sql("INSERT INTO car_entities (id, vin, make, model) VALUES ('b', 'V', 'M', 'X')")
    _engine, thread, _stop = run.engines[0]
    thread.join(90)
    took = time.monotonic() - started
    assert not thread.is_alive(), "capture kept retrying a topic that does not exist"
    errors = engine.errors  # type: ignore[attr-defined]
    run.engines.clear()
    assert errors, "capture stopped without an error"
    err = errors[0]
    assert isinstance(err, KafkaFatal), repr(err)
    assert run.topic in err.message and "retrying cannot fix this" in err.message, err.message
    assert "topics apply" in (err.hint or ""), err.hint
    assert engine.stats.reconnects == 0, "the producer was replaced for an error no retry can fix"
    assert took < 75, f"took {took:.0f} s"


def test_dead_letter_topic_refusing_a_letter_stops_capture(capture_run: CaptureRun) -> None:
    """A smaller record limit cannot help when the dead-letter topic itself is too small."""
    run = capture_run
    engine = run.start()
    dlq = run.pipeline.raw_topic.dlq_topic
    admin = AdminClient(run.conns.kafka.to_librdkafka())
    entry = ConfigEntry("max.message.bytes", "128", incremental_operation=AlterConfigOpType.SET)
    res = ConfigResource(ConfigResource.Type.TOPIC, dlq, incremental_configs=[entry])
    for fut in admin.incremental_alter_configs([res]).values():
        fut.result(timeout=30)
    time.sleep(1)  # the broker applies topic configs asynchronously
    run.sql("INSERT INTO car_entities (id, vin, make, model) VALUES ('big', 'V', 'M', repeat('z', 12000000))")
    _engine, thread, _stop = run.engines[0]
    thread.join(60)
    assert not thread.is_alive(), "capture kept replaying a batch whose dead letter cannot be written"
    errors = engine.errors  # type: ignore[attr-defined]
    run.engines.clear()
    assert errors and isinstance(errors[0], KafkaFatal), errors
    assert dlq in errors[0].message and "max.message.bytes" in (errors[0].hint or ""), errors[0]
