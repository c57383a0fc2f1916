"""Counts what reaches the filtered topics during a demo run and how long it took.

Latency is measured end to end: from the PostgreSQL commit (``eventHeader.createdDate``) to the
moment the event is readable (read_committed) in its filtered topic.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections import Counter
from importlib.resources import files
from typing import Any

import fastavro
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from cdcrouter.config import Connections


def _filtered_schema() -> Any:
    text = files("cdcrouter.schemas").joinpath("filtered-business-event.avsc").read_text()
    return fastavro.parse_schema(json.loads(text))


class LatencyProbe:
    """Reads every filtered topic from its current end; ``ready`` is set once positioned."""

    def __init__(self, conns: Connections, topics: list[str], run_id: str) -> None:
        self.conns = conns
        self.topics = topics
        self.run_id = run_id
        self.ready = threading.Event()
        self.counts: Counter[str] = Counter()
        self.latencies_ms: list[float] = []
        self.routed_ms: list[float] = []  # the same events' commit -> filterMetadata.filteredAt
        self._schema = _filtered_schema()

    def run(self, stop: threading.Event) -> None:
        consumer = Consumer(
            {
                **self.conns.kafka.to_librdkafka(),
                "group.id": f"cdcrouter-demo-probe-{self.run_id}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 10,
            }
        )
        try:
            md = consumer.list_topics(timeout=10)
            parts = []
            for t in self.topics:
                for p in sorted(md.topics[t].partitions):
                    # The real end offset now, so only events written after this point count.
                    parts.append(TopicPartition(t, p, _end_offset(consumer, t, p)))
            consumer.assign(parts)
            self.ready.set()
            while not stop.is_set():
                # consume(n, t) returns only when it has n records or t is up: a long t would add up
                # to t to every latency measured here, so poll with a short one.
                for msg in consumer.consume(500, 0.002):
                    if msg.error() is not None:
                        continue
                    self._observe(msg.topic(), msg.value())
        finally:
            consumer.close()

    def _observe(self, topic: str, value: bytes | None) -> None:
        now_ms = time.time_ns() / 1e6
        self.counts[topic] += 1
        if not value or len(value) < 5 or value[0] != 0:
            return
        record = fastavro.schemaless_reader(io.BytesIO(value[5:]), self._schema, self._schema)
        created = record["eventHeader"]["createdDate"]  # type: ignore[index,call-overload]
        routed = record["filterMetadata"]["filteredAt"]  # type: ignore[index,call-overload]
        self.routed_ms.append(routed - created)
        self.latencies_ms.append(now_ms - created)


def _end_offset(consumer: Consumer, topic: str, partition: int, timeout_s: float = 60.0) -> int:
    """The partition's end offset, retried while a just-started broker is still electing leaders
    (NOT_LEADER_FOR_PARTITION, LEADER_NOT_AVAILABLE and other retriable answers)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
        except KafkaException as exc:
            err = exc.args[0]
            retriable = err.retriable() or err.code() in (
                KafkaError.NOT_LEADER_FOR_PARTITION,
                KafkaError.LEADER_NOT_AVAILABLE,
            )
            if not retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
