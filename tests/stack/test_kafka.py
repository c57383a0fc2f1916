"""Kafka on the local stack: transactions commit or abort for real, read_committed sees the truth."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import NewTopic

pytestmark = pytest.mark.integration


def _create(admin, topic: str, partitions: int = 1) -> None:
    for fut in admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
    ).values():
        fut.result(timeout=30)


def _drain(conf: dict, topic: str, expect: int, timeout: float = 20.0) -> list[bytes]:
    import time

    consumer = Consumer(conf)
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(got) < expect:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            got.append(msg.value())
        # a little longer: anything beyond ``expect`` would be a bug too
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            msg = consumer.poll(0.3)
            if msg is not None and not msg.error():
                got.append(msg.value())
    finally:
        consumer.close()
    return got


def test_transactional_produce_and_read_committed_consume(stack_with, kafka_admin, unique_name):
    handle = stack_with("kafka")
    topic = unique_name("txn")
    _create(kafka_admin, topic, partitions=2)

    producer = Producer(
        handle.kafka_conf(**{"transactional.id": unique_name("tx"), "enable.idempotence": True})
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, key=str(i).encode(), value=f"committed-{i}".encode())
    producer.commit_transaction(30)
    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, key=str(i).encode(), value=f"aborted-{i}".encode())
    producer.flush(30)
    producer.abort_transaction(30)

    base = {"auto.offset.reset": "earliest", "enable.auto.commit": False}
    committed = _drain(
        handle.kafka_conf(**base, **{"group.id": unique_name("rc"), "isolation.level": "read_committed"}),
        topic,
        expect=5,
    )
    assert sorted(committed) == sorted(f"committed-{i}".encode() for i in range(5))

    uncommitted = _drain(
        handle.kafka_conf(**base, **{"group.id": unique_name("ru"), "isolation.level": "read_uncommitted"}),
        topic,
        expect=8,
    )
    assert len(uncommitted) == 8  # the aborted records are in the log: only read_committed hides them


def test_topics_are_never_auto_created(stack_with, unique_name):
    handle = stack_with("kafka")
    topic = unique_name("nope")
    producer = Producer(handle.kafka_conf(**{"message.timeout.ms": 3000}))
    errors: list[str] = []
    producer.produce(topic, b"x", on_delivery=lambda err, msg: errors.append(str(err)))
    producer.flush(10)
    assert errors and errors[0] != "None"
