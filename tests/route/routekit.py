"""Helpers for routing tests: a fresh raw topic, filtered topics and schemas per test; readers."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from cdcrouter.route.events import bench_filters_yaml, encode_raw, event_key, make_event
from cdcrouter.schemas import parsed_filtered_schema
from cdcrouter.schemas.registry import RegistryClient, apply_schemas, desired_subjects, plan_schemas
from cdcrouter.topics import admin_client, apply_topics, plan_topics, topics_for


@dataclass
class RouteEnv:
    conns: Any
    prefix: str
    raw: str
    filters_path: Path
    raw_schema_id: int
    filtered_topics: list[str]
    unique: Callable[[str], str]
    all_topics: list[str]

    @property
    def dlq(self) -> str:
        return f"{self.raw}.router.dlq"

    def kafka(self, **extra: Any) -> dict[str, Any]:
        return {**self.conns.kafka.to_librdkafka(), **extra}

    def produce(
        self, start: int, n: int, seed: int = 7, extra: list[tuple[bytes, bytes]] | None = None
    ) -> list[dict]:
        """Append events ``start..start+n-1`` (and ``extra`` raw (key, value) pairs); returns the events."""
        # idempotent: a key's events stay in the order written, even when a broker restart makes
        # the producer retry (the order tests compare against it)
        producer = Producer(
            self.kafka(**{"linger.ms": 10, "partitioner": "murmur2_random", "enable.idempotence": True})
        )
        events = []
        for i in range(start, start + n):
            event = make_event(i, seed)
            events.append(event)
            while True:
                try:
                    producer.produce(self.raw, encode_raw(event, self.raw_schema_id), event_key(event))
                    break
                except BufferError:
                    producer.poll(0.05)
        for key, value in extra or []:
            producer.produce(self.raw, value, key)
        assert producer.flush(120) == 0, "raw events not acknowledged in 120 s"
        return events

    def committed(self, group: str) -> int:
        """Sum of the group's committed offsets on the raw topic (-1 while the broker is unsure,
        e.g. NOT_COORDINATOR just after a restart)."""
        c = Consumer(self.kafka(**{"group.id": group, "enable.auto.commit": False}))
        try:
            md = c.list_topics(self.raw, timeout=10).topics[self.raw]
            tps = [TopicPartition(self.raw, p) for p in md.partitions]
            return sum(max(tp.offset, 0) for tp in c.committed(tps, timeout=10))
        except KafkaException as exc:
            if exc.args[0].retriable() or exc.args[0].code() in (
                KafkaError.NOT_COORDINATOR,
                KafkaError._TIMED_OUT,
            ):
                return -1
            raise
        finally:
            c.close()

    def wait_committed(self, group: str, target: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while self.committed(group) < target:
            assert time.monotonic() < deadline, f"group {group} did not commit {target} records in {timeout}s"
            time.sleep(0.2)


def write_filters(env: RouteEnv, text: str) -> None:
    tmp = env.filters_path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(env.filters_path)  # atomic: the router never reads half a file


def read_topic(conf: dict[str, Any], topic: str, timeout: float = 60.0) -> list[Any]:
    """Every committed record of ``topic`` (read_committed), up to its end when called."""
    c = Consumer(
        {**conf, "group.id": "unused-read", "isolation.level": "read_committed", "enable.auto.commit": False}
    )
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        parts = sorted(md.partitions)
        # the high watermark, not the LSO a read_committed client would be told: a commit's markers
        # are written after commit_transaction() returns, so the LSO can lag for a moment
        hw = Consumer({**conf, "group.id": "unused-read", "isolation.level": "read_uncommitted"})
        ends = {p: hw.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        hw.close()
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        todo = {p for p in parts if ends[p] > 0}
        while todo:
            assert time.monotonic() < deadline, f"reading {topic} timed out; partitions {todo} unfinished"
            for msg in c.consume(1000, 0.2):
                if msg.error() is None:
                    out.append(msg)
            for p in list(todo):
                pos = c.position([TopicPartition(topic, p)])[0].offset
                if pos >= ends[p]:
                    todo.discard(p)
        return out
    finally:
        c.close()


def decode_filtered(value: bytes) -> dict[str, Any]:
    return fastavro.schemaless_reader(io.BytesIO(value[5:]), parsed_filtered_schema(), None)


def setup_env(conns: Any, unique: Callable[[str], str], tmp_path: Path, filters: int = 20) -> RouteEnv:
    prefix = unique("rt") + "-"
    path = tmp_path / "filters.yaml"
    path.write_text(bench_filters_yaml(prefix, filters))
    raw = f"{prefix}raw"
    specs = topics_for(path, raw_topic=raw)
    admin = admin_client(conns.kafka.to_librdkafka())
    apply_topics(admin, plan_topics(admin, specs))
    filtered = sorted(s.name for s in specs if s.role == "filtered")
    with RegistryClient(conns.registry.to_client_conf()) as reg:
        ids = apply_schemas(reg, plan_schemas(reg, desired_subjects(raw, filtered)))
    return RouteEnv(conns, prefix, raw, path, ids[f"{raw}-value"], filtered, unique, [s.name for s in specs])


def delete_topics(env: RouteEnv) -> None:
    """Drop a test's topics: the shared broker must not pile up partitions (restarts get slow)."""
    from cdcrouter.topics import delete_topics as delete

    delete(env.conns, env.all_topics)
