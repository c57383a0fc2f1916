"""Backfill: re-run one filter over a range of the raw topic into that filter's topic.

The replay never joins the live routing group: it ``assign()``s the raw partitions itself (start
from an offset, or from a timestamp through ``offsets_for_times``), stops at the end offsets it
saw when it started (or ``--to``), and commits no consumer offsets anywhere. Its output is written
in transactions (``transactional.id`` ``cdcrouter-replay.<filter>``) so read_committed consumers
never see half a chunk, and a crashed replay's open chunk is aborted by the next one.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from cdcrouter.errors import RouteError, UsageError
from cdcrouter.route.codec import DecodeError, FilteredSchemas, RawDecoder
from cdcrouter.route.filterset import compile_filters_file
from cdcrouter.route.wire import MetadataEncoder, header
from cdcrouter.schemas import filtered_schema_text
from cdcrouter.schemas.registry import RegistryClient, subject_for

__all__ = ["Position", "ReplayResult", "parse_position", "replay"]

log = logging.getLogger("cdcrouter.route.replay")


@dataclass(frozen=True)
class Position:
    """An offset (applied to every partition) or a timestamp in epoch milliseconds."""

    offset: int | None = None
    timestamp_ms: int | None = None


def parse_position(text: str) -> Position:
    """``123`` or ``offset:123`` is an offset; ``ts:1764000000000`` or an ISO-8601 time is a timestamp."""
    t = text.strip()
    try:
        if t.startswith("offset:"):
            return Position(offset=int(t[7:]))
        if t.startswith("ts:"):
            return Position(timestamp_ms=int(t[3:]))
        if t.isdigit():
            return Position(offset=int(t))
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(
            f"cannot read position {text!r}",
            hint="use an offset (1200), ts:<epoch ms>, or an ISO time (2026-11-24T21:00:00Z)",
        ) from exc
    if dt.tzinfo is None:
        raise UsageError(f"time {text!r} has no time zone", hint="add Z or +00:00")
    return Position(timestamp_ms=int(dt.timestamp() * 1000))


@dataclass
class ReplayResult:
    scanned: int
    routed: int
    skipped_undecodable: int
    topic: str


def _resolve(
    consumer: Consumer, topic: str, partitions: list[int], pos: Position, end: bool
) -> dict[int, int]:
    """Partition -> offset for ``pos``; a timestamp past the end maps to the high watermark."""
    if pos.offset is not None:
        return dict.fromkeys(partitions, pos.offset)
    tps = [TopicPartition(topic, p, pos.timestamp_ms or 0) for p in partitions]
    out = {}
    for tp in consumer.offsets_for_times(tps, timeout=15):
        if tp.offset < 0:  # no record at or after the time: the end
            tp.offset = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=15)[1]
        out[tp.partition] = tp.offset
    return out


def replay(
    filters_path: str | Path,
    filter_id: str,
    connections: Any,
    raw_topic: str,
    start: Position,
    stop: Position | None = None,
    chunk: int = 5_000,
) -> ReplayResult:
    """Route ``[start, stop)`` of ``raw_topic`` through ``filter_id`` only, into its topic."""
    filters = compile_filters_file(filters_path)
    route = filters.routes.get(filter_id)
    if route is None:
        known = ", ".join(sorted(filters.routes)) or "none"
        raise UsageError(
            f"no enabled filter {filter_id!r} in {filters_path}", hint=f"enabled filters: {known}"
        )
    kafka = connections.kafka.to_librdkafka()
    registry = RegistryClient(connections.registry.to_client_conf())
    schema_id = registry.lookup(subject_for(route.topic), filtered_schema_text())
    if schema_id is None:
        raise RouteError(f"{subject_for(route.topic)} is not registered", hint="run cdcrouter schemas apply")
    decoder = RawDecoder(registry.schema_by_id)
    evolved = FilteredSchemas(registry)
    consumer = Consumer(
        {
            **kafka,
            "group.id": f"cdcrouter-replay.{filter_id}.{uuid.uuid4().hex[:8]}",  # never committed
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
        }
    )
    producer = Producer(
        connections.kafka.producer_conf(
            **{
                "transactional.id": f"cdcrouter-replay.{filter_id}",
                "linger.ms": 5,
                "retry.backoff.ms": 5,
                "queue.buffering.max.messages": 1_000_000,
            }
        )
    )
    try:
        md = consumer.list_topics(raw_topic, timeout=15).topics.get(raw_topic)
        if md is None or md.error is not None:
            raise RouteError(f"raw topic {raw_topic} does not exist", hint="check --raw-topic")
        parts = sorted(md.partitions)
        begin = _resolve(consumer, raw_topic, parts, start, end=False)
        if stop is None:
            end = {
                p: consumer.get_watermark_offsets(TopicPartition(raw_topic, p), timeout=15)[1] for p in parts
            }
        else:
            end = _resolve(consumer, raw_topic, parts, stop, end=True)
        todo = {p for p in parts if begin[p] < end[p]}
        producer.init_transactions(30)
        head = header(schema_id)
        meta = MetadataEncoder(filter_id, route.consumer_id)
        scanned = routed = bad = 0
        in_txn = False
        if todo:
            consumer.assign([TopicPartition(raw_topic, p, begin[p]) for p in sorted(todo)])
        idle_since = time.monotonic()
        while todo:
            msgs = consumer.consume(1_000, 0.5)
            if not msgs and time.monotonic() - idle_since > 30:
                raise RouteError(
                    f"replay stalled: nothing from {raw_topic} for 30 s; {sorted(todo)} unfinished",
                    hint="an open transaction on the raw topic may hold back read_committed readers",
                )
            for msg in msgs:
                if msg.error() is not None:
                    continue
                idle_since = time.monotonic()
                p, off = msg.partition(), msg.offset()
                if p not in todo or off >= end[p]:
                    continue
                scanned += 1
                if off + 1 >= end[p]:
                    todo.discard(p)
                try:
                    event, body, writer = decoder.decode(msg.value())
                    if filter_id not in filters.match(event):
                        continue
                    framing = head if writer.passthrough else evolved.header(writer, route.topic)
                except DecodeError:
                    bad += 1
                    continue
                if not in_txn:
                    producer.begin_transaction()
                    in_txn = True
                now_ms = time.time_ns() // 1_000_000
                value = b"".join((framing, body, meta.encode(now_ms)))
                entities = event["eventBody"]["entities"]
                key = entities[0]["entityId"].encode() if entities else msg.key()
                producer.produce(route.topic, value, key)
                routed += 1
                if routed % chunk == 0:
                    producer.commit_transaction(60)
                    in_txn = False
            # a partition whose remaining records are all transaction markers never yields one more record
            for p in list(todo):
                pos = consumer.position([TopicPartition(raw_topic, p)])[0].offset
                if pos >= end[p]:
                    todo.discard(p)
        if in_txn:
            producer.commit_transaction(60)
    except KafkaException as exc:
        raise RouteError(f"replay of {filter_id} failed: {exc.args[0].str()}", hint="rerun it") from exc
    finally:
        consumer.close()
        registry.close()
    log.info("replayed %s: scanned %d, routed %d to %s", filter_id, scanned, routed, route.topic)
    return ReplayResult(scanned, routed, bad, route.topic)
