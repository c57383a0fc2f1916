"""Thin helpers over confluent-kafka: client settings, topic creation, error translation."""

from __future__ import annotations

import re
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
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
    conf = connections.kafka.to_librdkafka()
    conf.update({"enable.idempotence": True, "acks": "all", "linger.ms": 5})
    conf.update(overrides)
    return conf


def admin(connections: Connections) -> AdminClient:
    return AdminClient(connections.kafka.to_librdkafka())


def ensure_topic(connections: Connections, topic: str, partitions: int = 1, timeout: float = 30.0) -> bool:
    """Create ``topic`` unless it exists (the broker's auto-creation is off); True when created.

    Returns once the broker's metadata shows the topic, so a consumer can subscribe right away.
    """
    client = admin(connections)
    future = client.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=-1)])[topic]
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
