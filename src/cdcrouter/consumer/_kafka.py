"""Thin helpers over confluent-kafka: client settings, topic creation, bounded reads, error translation.

Topics may be written in transactions (the router's and the capture engine's are): their offsets
are not contiguous records. A commit or abort marker takes an offset of its own and a
read_committed reader never sees it nor an aborted record. So a bounded read takes its end from
the last stable offset (``get_watermark_offsets`` of a read_committed consumer) and is done when
the consumer's *position* reaches it, never when "the record at end - 1" arrives, and a count of
records is a count of records read, not ``high - low``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cdcrouter.config import Connections
from cdcrouter.consumer._errors import ConsumerError

_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def check_name(kind: str, name: str) -> str:
    """Consumer and topic names end up in topic names: keep them to Kafka's alphabet."""
    if not _TOPIC.match(name):
        raise ConsumerError(
            f"invalid {kind} {name!r}", hint="use letters, digits, '.', '_' and '-' (at most 249)"
        )
    return name


def consumer_conf(connections: Connections, group: str, **overrides: Any) -> dict[str, Any]:
    """A read_committed consumer that never commits on its own."""
    conf = connections.kafka.to_librdkafka()
    conf.update(
        {
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        }
    )
    conf.update(overrides)
    return conf


def producer_conf(connections: Connections, **overrides: Any) -> dict[str, Any]:
    """The shared producer settings (idempotent, the Java client's partitioner) plus ``overrides``."""
    return connections.kafka.producer_conf(**{"linger.ms": 5, **overrides})


Bounds = dict[int, tuple[int, int]]


def stable_bounds(consumer: Consumer, topic: str, partitions: list[int], timeout: float = 10.0) -> Bounds:
    """Per partition ``(low watermark, last stable offset)``: what a read_committed reader can reach.

    ``consumer`` must be read_committed: librdkafka then asks the broker for the LSO, which is
    also past a trailing commit marker or aborted transaction.
    """
    return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout) for p in partitions}


def read_range(
    consumer: Consumer, topic: str, bounds: Bounds, *, idle_timeout: float = 30.0
) -> Iterator[Message]:
    """The committed records of ``topic`` inside ``bounds`` (``[start, end)`` per partition), in
    offset order per partition, then stop.

    A partition is done once the consumer's position reaches its end: transaction markers and
    aborted records move the position without yielding a record. Raises when no partition moves
    for ``idle_timeout`` seconds (a broker that does not answer).
    """
    todo = {p: end for p, (start, end) in bounds.items() if start < end}
    if not todo:
        return
    consumer.assign([TopicPartition(topic, p, bounds[p][0]) for p in todo])
    last_progress = time.monotonic()
    positions: dict[int, int] = {}
    try:
        while todo:
            for msg in consumer.consume(500, 0.2):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise ConsumerError(f"reading {topic}: {msg.error().str()}", hint="check the broker")
                if msg.partition() in todo and msg.offset() < todo[msg.partition()]:
                    yield msg
            now = time.monotonic()
            for tp in consumer.position([TopicPartition(topic, p) for p in todo]):
                if tp.offset >= todo[tp.partition]:
                    del todo[tp.partition]
                elif tp.offset != positions.get(tp.partition):
                    positions[tp.partition] = tp.offset
                    last_progress = now
            if todo and now - last_progress > idle_timeout:
                where = ", ".join(
                    f"{p}: at {positions.get(p, '-')} of {end}" for p, end in sorted(todo.items())
                )
                raise ConsumerError(
                    f"timed out reading {topic} ({where})", hint="check the broker (cdcrouter stack status)"
                )
    finally:
        consumer.unassign()


def admin(connections: Connections) -> AdminClient:
    return AdminClient(connections.kafka.to_librdkafka())


# what `cdcrouter topics apply` gives a dead-letter topic: capture's 8 MiB raw limit plus room
# for the headers (topics/spec.py), so any event a consumer reads can be dead-lettered whole
DLQ_MAX_MESSAGE_BYTES = 8 * 1024 * 1024 + 64 * 1024


def ensure_topic(
    connections: Connections,
    topic: str,
    partitions: int = 1,
    timeout: float = 30.0,
    config: dict[str, str] | None = None,
) -> bool:
    """Create ``topic`` unless it exists (the broker's auto-creation is off); True when created.

    Returns once the broker's metadata shows the topic, so a consumer can subscribe right away.
    """
    client = admin(connections)
    new = NewTopic(topic, num_partitions=partitions, replication_factor=-1, config=config or {})
    future = client.create_topics([new])[topic]
    try:
        future.result(timeout=timeout)
    except KafkaException as exc:
        if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise ConsumerError(
            f"cannot create topic {topic}: {exc}", hint="create it yourself or grant CREATE on the cluster"
        ) from exc
    partitions_of(connections, topic, wait=timeout)
    return True


def partitions_of(
    connections: Connections, topic: str, timeout: float = 10.0, wait: float = 3.0
) -> list[int]:
    """The topic's partition ids; a clear error when it does not exist after ``wait`` seconds
    (a topic created a moment ago takes a little while to appear in every broker's metadata)."""
    client = admin(connections)
    deadline = time.monotonic() + wait
    while True:
        try:
            meta = client.list_topics(topic=topic, timeout=timeout)
        except KafkaException as exc:
            raise ConsumerError(
                f"Kafka at {connections.kafka.bootstrap_servers} unreachable: {exc}",
                hint="start it (cdcrouter stack up) or set CDCROUTER_KAFKA__BOOTSTRAP_SERVERS",
            ) from exc
        tmeta = meta.topics.get(topic)
        if tmeta is not None and tmeta.error is None and tmeta.partitions:
            return sorted(tmeta.partitions)
        if time.monotonic() >= deadline:
            raise ConsumerError(
                f"topic {topic} does not exist on {connections.kafka.bootstrap_servers}",
                hint="check the name, or create it (cdcrouter topics apply; broker auto-creation is off)",
            )
        time.sleep(0.2)
