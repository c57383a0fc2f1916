"""A change too large for the raw topic is dead-lettered and capture goes on (issue #12, finding 2).

It used to stall capture for good: a 3 MB value passed the producer's 10 MB limit but not the
topic's 1 MB one, so the broker refused it, the Kafka transaction waited two minutes and every
restart stopped at the same row; a 12 MB value failed at produce() and the engine replaced its
producer again and again. Now the raw topic is created with room for realistic rows (8 MiB), the
producer is sized from the topic's real ``max.message.bytes``, and a change that still does not
fit goes to ``<raw>.capture-dlq`` in the same Kafka transaction, with headers naming the row.
The oracle is PostgreSQL: which rows were written, and how large each encoded value must be.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from capture_helpers import CaptureRun, make_pipeline, read_topic
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from cdcrouter.capture.kafka_limits import topic_max_message_bytes
from cdcrouter.capture.pipeline import RAW_MAX_MESSAGE_BYTES
from cdcrouter.topics.spec import desired_topics

pytestmark = pytest.mark.integration

MB = 1_000_000


def _dead_letters(
    run: CaptureRun, expect: int, timeout_s: float = 60
) -> list[tuple[bytes, dict[str, str], Any]]:
    """Committed records of the capture DLQ: (key, cdcrouter.dlq.* headers, JSON value)."""
    consumer = Consumer(
        {
            **run.conns.kafka.to_librdkafka(),
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(run.pipeline.raw_topic.dlq_topic, 0, 0)])
    out: list[tuple[bytes, dict[str, str], Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    if len(out) >= expect:
                        break
                    continue
                raise AssertionError(msg.error().str())
            headers = {k.removeprefix("cdcrouter.dlq."): v.decode() for k, v in msg.headers() or []}
            out.append((msg.key(), headers, json.loads(msg.value())))
    finally:
        consumer.close()
    return out


def _insert_car(run: CaptureRun, car_id: str, model: str) -> None:
    run.sql(
        "INSERT INTO car_entities (id, vin, make, model) VALUES (%s, 'V', 'M', %s)", params=(car_id, model)
    )


def _check_letter(
    letter: tuple[bytes, dict[str, str], Any], *, key: str, table: str, size_at_least: int
) -> None:
    k, headers, value = letter
    assert k == key.encode()
    assert headers["table"] == table and value["table"] == table
    assert headers["entity_id"] == key
    assert headers["stage"] == "capture"
    lsn_hi, _, lsn_lo = headers["lsn"].partition("/")
    assert lsn_hi and lsn_lo and int(lsn_hi, 16) >= 0, headers["lsn"]  # a real WAL position
    size, limit = int(headers["size"]), int(headers["limit"])
    assert size >= size_at_least > limit, (size, limit)
    assert value["size"] == size and value["limit"] == limit
    assert "Message size too large" in headers["error"]


def test_large_rows_fit_or_are_dead_lettered_and_capture_goes_on(capture_run: CaptureRun) -> None:
    run = capture_run
    run.start()
    _insert_car(run, "big3", "x" * (3 * MB))  # fits the default 8 MiB raw topic
    for i in range(3):
        _insert_car(run, f"a{i}", "small")
    _insert_car(run, "big12", "y" * (12 * MB))  # does not
    for i in range(3):
        _insert_car(run, f"b{i}", "small")
    events = run.events(expect=7, timeout_s=60)
    ids = [e["eventBody"]["entities"][0]["entityId"] for e in events]
    assert ids == ["big3", "a0", "a1", "a2", "b0", "b1", "b2"]
    assert len(events[0]["eventBody"]["entities"][0]["updatedAttributes"]["model"]) == 3 * MB
    letters = _dead_letters(run, expect=1)
    assert len(letters) == 1
    _check_letter(letters[0], key="big12", table="car_entities", size_at_least=12 * MB)
    assert int(letters[0][1]["limit"]) < RAW_MAX_MESSAGE_BYTES
    engine = run.engines[0][0]
    assert engine.stats.dead_letters == 1 and engine.stats.reconnects == 0
    # capture created the raw topic with the size `topics plan|apply` declares for it
    declared = desired_topics(run.topic, {}, raw_max_message_bytes=run.pipeline.raw_topic.max_message_bytes)
    kafka = run.conns.kafka.to_librdkafka()
    created = topic_max_message_bytes(kafka, run.topic, configured=0)
    assert str(created) == declared[0].config["max.message.bytes"] == str(RAW_MAX_MESSAGE_BYTES)


def test_generic_path_outbox_rows_over_the_topic_limit_are_dead_lettered(capture_run: CaptureRun) -> None:
    run = capture_run
    run.pipeline = make_pipeline(
        run.schema, run.topic.removeprefix("raw-"), raw_topic={"max_message_bytes": 2 * 1024 * 1024}
    )
    run.start()

    def outbox(entity: str, blob: str) -> None:
        entities = json.dumps(
            [{"entityType": "Doc", "entityId": entity, "updatedAttributes": {"body": blob}}]
        )
        run.sql(
            "INSERT INTO business_events (event_name, entities) VALUES ('DocSaved', %s)", params=(entities,)
        )

    outbox("d3", "x" * (3 * MB))
    outbox("s1", "small")
    outbox("d12", "y" * (12 * MB))
    outbox("s2", "small")
    events = run.events(expect=2, timeout_s=60)
    assert [e["eventBody"]["entities"][0]["entityId"] for e in events] == ["s1", "s2"]
    letters = _dead_letters(run, expect=2)
    assert [k for k, _h, _v in letters] == [b"d3", b"d12"]
    _check_letter(letters[0], key="d3", table="business_events", size_at_least=3 * MB)
    _check_letter(letters[1], key="d12", table="business_events", size_at_least=12 * MB)
    assert int(letters[0][1]["limit"]) < 2 * 1024 * 1024


BIG_ROW = {
    "fused": "INSERT INTO car_entities (id, vin, make, model) VALUES ('big', 'V', 'M', repeat('z', 3000000))",
    "generic": "INSERT INTO business_events (event_name, entities) VALUES ('DocSaved', json_build_array("
    "json_build_object('entityType', 'Doc', 'entityId', 'big', 'updatedAttributes', "
    "json_build_object('body', repeat('z', 3000000)))))",
}
BIG_TABLE = {"fused": "car_entities", "generic": "business_events"}


@pytest.mark.parametrize("path", ["fused", "generic"])
def test_broker_refusing_a_record_aborts_and_replays_the_batch_without_it(
    capture_run: CaptureRun, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """The topic's limit lowered under a running capture: the broker, not the producer, refuses.
    ``fused``: the big change is a table row (fused fast path); ``generic``: an outbox row."""
    run = capture_run
    engine = run.start()
    _insert_car(run, "before", "small")
    assert len(run.events(expect=1)) == 1
    admin = AdminClient(run.conns.kafka.to_librdkafka())
    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        run.topic,
        incremental_configs=[
            ConfigEntry("max.message.bytes", str(1024 * 1024), incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for fut in admin.incremental_alter_configs([res]).values():
        fut.result(timeout=30)
    time.sleep(1)  # the broker applies topic configs asynchronously
    started = time.monotonic()
    run.sql(
        "INSERT INTO car_entities (id, vin, make, model) VALUES ('c1', 'V', 'M', 'small')",
        BIG_ROW[path],
        "INSERT INTO car_entities (id, vin, make, model) VALUES ('c2', 'V', 'M', 'small')",
    )
    _insert_car(run, "c3", "small")
    events = run.events(expect=4, timeout_s=90)
    took = time.monotonic() - started
    ids = [e["eventBody"]["entities"][0]["entityId"] for e in events]
    assert ids == ["before", "c1", "c2", "c3"], ids  # once each: the refused batch was aborted
    letters = _dead_letters(run, expect=1)
    assert len(letters) == 1
    _check_letter(letters[0], key="big", table=BIG_TABLE[path], size_at_least=3 * MB)
    assert int(letters[0][1]["limit"]) < 1024 * 1024
    assert engine.stats.dead_letters == 1
    assert engine.size_cap is not None and engine.size_cap < 1024 * 1024  # the broker's refusal was seen
    assert took < 45, f"took {took:.0f} s (a refused record must not wait out the transaction timeout)"
    assert read_topic(run.conns, run.topic, expect=4, timeout_s=5)[-1][0] == b"c3"
    # librdkafka's own account of the refusal went through Python logging, not raw to stderr
    kafka_lines = [r.getMessage() for r in caplog.records if r.name == "cdcrouter.capture.kafka"]
    assert any("Message size too large" in line for line in kafka_lines), kafka_lines
