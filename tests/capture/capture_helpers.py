"""Capture test helpers (imported by tests/capture/*): a private schema, topic and slot per test,
a running engine, and a read_committed consumer that decodes values through the registry."""

from __future__ import annotations

import copy
import io
import json
import struct
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
import httpx
import psycopg

from cdcrouter.capture import CaptureEngine, pipeline_from_dict
from cdcrouter.capture.domain import SAMPLE_OUTBOX, SAMPLE_TABLES
from cdcrouter.capture.pipeline import Pipeline
from cdcrouter.config import Connections


class RegistryDecoder:
    """Confluent wire format -> dict, fetching each writer schema by id from the registry."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.schemas: dict[int, Any] = {}

    def decode(self, value: bytes) -> dict[str, Any]:
        assert value[0] == 0, "not Confluent wire format (magic byte)"
        (schema_id,) = struct.unpack(">I", value[1:5])
        if schema_id not in self.schemas:
            resp = httpx.get(f"{self.url}/schemas/ids/{schema_id}", timeout=10)
            resp.raise_for_status()
            self.schemas[schema_id] = fastavro.parse_schema(json.loads(resp.json()["schema"]))
        return fastavro.schemaless_reader(io.BytesIO(value[5:]), self.schemas[schema_id])  # type: ignore[return-value]


def read_topic(
    conns: Connections, topic: str, *, expect: int | None = None, timeout_s: float = 30.0
) -> list[tuple[bytes, dict[str, Any]]]:
    """All committed records of ``topic`` (read_committed), decoded; waits for ``expect`` records."""
    import time

    from confluent_kafka import Consumer, KafkaError, TopicPartition

    decoder = RegistryDecoder(conns.registry.url)
    consumer = Consumer(
        {
            **conns.kafka.to_librdkafka(),
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = sorted(meta.partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        out: list[tuple[bytes, dict[str, Any]]] = []
        eof: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msgs = consumer.consume(10_000, 0.5)
            for m in msgs:
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        eof.add(m.partition())
                        continue
                    raise AssertionError(m.error().str())
                eof.discard(m.partition())
                out.append((m.key(), decoder.decode(m.value())))
            if len(eof) == len(parts) and (expect is None or len(out) >= expect):
                break
        return out
    finally:
        consumer.close()


def strip_volatile(event: dict[str, Any]) -> dict[str, Any]:
    """The event without what differs between runs (uuid, produce time, commit time)."""
    e = json.loads(json.dumps(event))
    for k in ("uuid", "createdDate", "savedDate"):
        e["eventHeader"].pop(k)
    e["sourceMetadata"].pop("timestamp")
    return e


@dataclass
class CaptureRun:
    """One test's private pipeline, plus helpers to change rows and read what capture produced."""

    conns: Connections
    pipeline: Pipeline
    schema: str
    state_dir: Path
    engines: list[tuple[CaptureEngine, threading.Thread, threading.Event]] = field(default_factory=list)

    @property
    def topic(self) -> str:
        return self.pipeline.raw_topic.name

    def sql(self, *statements: str, params: tuple[Any, ...] | None = None) -> None:
        """Run statements in ONE transaction, with search_path set to the test's schema."""
        with psycopg.connect(self.conns.postgres.conninfo(), options=f"-c search_path={self.schema}") as conn:
            for st in statements:
                conn.execute(st.encode() if params is None else st, params)  # type: ignore[arg-type]

    def start(self, **kw: Any) -> CaptureEngine:
        engine = CaptureEngine(self.pipeline, self.conns, progress=lambda _m: None, **kw)
        stop = threading.Event()
        errors: list[BaseException] = []

        def target() -> None:
            try:
                engine.run(stop)
            except BaseException as exc:  # surfaced by stop()
                errors.append(exc)
                engine.ready.set()

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        engine.errors = errors  # type: ignore[attr-defined]
        self.engines.append((engine, thread, stop))
        assert engine.ready.wait(60), "capture did not start streaming within 60 s"
        if errors:
            raise errors[0]
        return engine

    def stop(self) -> None:
        for engine, thread, stop in self.engines:
            stop.set()
            thread.join(60)
            assert not thread.is_alive(), "capture did not stop within 60 s"
            errs = engine.errors  # type: ignore[attr-defined]
            if errs:
                raise errs[0]
        self.engines.clear()

    def events(self, expect: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        records = read_topic(self.conns, self.topic, expect=expect, timeout_s=timeout_s)
        for key, event in records:
            assert key == event["eventBody"]["entities"][0]["entityId"].encode()
        return [e for _, e in records]


def make_pipeline(schema: str, name: str, **overrides: Any) -> Pipeline:
    doc: dict[str, Any] = {
        "schema": schema,
        "raw_topic": {"name": f"raw-{name}", "partitions": 1},
        "replication": {
            "slot": f"s_{name}".replace("-", "_")[:63],
            "publication": f"p_{name}".replace("-", "_")[:63],
        },
        "batching": {"max_ms": 20},
        "tables": copy.deepcopy(SAMPLE_TABLES),
        "outbox": dict(SAMPLE_OUTBOX),
    }
    for key, value in overrides.items():
        doc[key] = (
            {**doc[key], **value} if isinstance(value, dict) and isinstance(doc.get(key), dict) else value
        )
    return pipeline_from_dict(doc)


def drop_capture_objects(
    conns: Connections, pipeline: Pipeline, schema: str | None, extra_topics: list[str] | None = None
) -> None:
    """Remove the test's slot, publication, schema and topics (the shared stack keeps running;
    fewer leftover partitions keep its restarts quick)."""
    from cdcrouter.capture import source
    from cdcrouter.topics import delete_topics

    conn = source.connect_sql(conns.postgres)
    try:
        source.drop_slot(conn, pipeline.replication.slot)
        source.drop_publication(conn, pipeline.replication.publication)
        if schema:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        conn.close()
    raw = pipeline.raw_topic
    delete_topics(conns, [raw.name, raw.offsets_topic, raw.dlq_topic, *(extra_topics or [])])
