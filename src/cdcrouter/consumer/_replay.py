"""Inspect and replay dead-letter topics.

Replays are safe to re-run: progress is kept as committed offsets of a per-DLQ group
(``<dlq>.replay`` or ``<dlq>.replay.handler``), so a second ``replay`` only moves records the
first did not. Replaying to a topic is exactly-once: each chunk of records and the progress
offsets are committed in one Kafka transaction. Replaying into a handler is at-least-once
(progress is committed after the handler succeeded), deduplicated by the app's idempotency store.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from cdcrouter.config import Connections
from cdcrouter.consumer import _dlq, _kafka
from cdcrouter.consumer._app import ConsumerApp
from cdcrouter.consumer._errors import ConsumerError

REPLAY_HEADER = "cdcrouter.replay.from"


@dataclass(frozen=True)
class DlqInfo:
    topic: str
    origin: str
    consumer: str
    records: int
    partitions: int


@dataclass(frozen=True)
class DlqRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    @property
    def failure(self) -> dict[str, str]:
        """The ``cdcrouter.dlq.*`` headers (error, stage, origin topic/partition/offset, ...)."""
        return _dlq.header_map(self.headers)


class _AsOriginal:
    """A DLQ record seen as the original record (its origin position, original headers)."""

    def __init__(self, rec: DlqRecord) -> None:
        self._rec = rec
        self._f = rec.failure

    def topic(self) -> str:
        return self._f.get("topic", "")

    def partition(self) -> int:
        return int(self._f.get("partition") or 0)

    def offset(self) -> int:
        return int(self._f.get("offset") or 0)

    def key(self) -> bytes | None:
        return self._rec.key

    def value(self) -> bytes | None:
        return self._rec.value

    def headers(self) -> list[tuple[str, bytes]]:
        return _dlq.strip(self._rec.headers)

    def timestamp(self) -> tuple[int, int]:
        ts = self._f.get("timestamp")
        return (1, int(ts)) if ts else (0, 0)


@dataclass
class ReplayResult:
    replayed: int = 0
    skipped: int = 0  # already replayed by an earlier run (below the progress offset)
    targets: dict[str, int] = field(default_factory=dict)


def list_dlqs(connections: Connections) -> list[DlqInfo]:
    """Every dead-letter topic (``*.dlq``, and capture's ``<raw>.capture-dlq``) with its record count.

    The records are counted by reading them (read_committed): a transactional DLQ's offsets also
    hold commit markers and aborted records, so ``high - low`` would overcount.
    """
    try:
        meta = _kafka.admin(connections).list_topics(timeout=10)
    except KafkaException as exc:
        raise ConsumerError(f"Kafka unreachable: {exc}", hint="cdcrouter stack up") from exc
    names = sorted(t for t in meta.topics if t.endswith((_dlq.SUFFIX, _dlq.CAPTURE_SUFFIX)))
    if not names:
        return []
    out = []
    c = Consumer(_kafka.consumer_conf(connections, f"cdcrouter-dlq-list-{uuid.uuid4().hex[:8]}"))
    try:
        for name in names:
            parts = sorted(meta.topics[name].partitions)
            try:
                count = sum(1 for _ in _kafka.read_range(c, name, _kafka.stable_bounds(c, name, parts)))
            except KafkaException:
                continue  # deleted since the metadata was read
            origin, consumer = _split(name)
            out.append(DlqInfo(name, origin, consumer, count, len(parts)))
    finally:
        c.close()
    return out


def _split(dlq: str) -> tuple[str, str]:
    """``<topic>.<consumer>.dlq`` -> (topic, consumer); best effort (topics may contain dots).
    Capture's ``<raw>.capture-dlq`` -> (raw, "capture")."""
    if dlq.endswith(_dlq.CAPTURE_SUFFIX):
        return dlq[: -len(_dlq.CAPTURE_SUFFIX)], "capture"
    stem = dlq[: -len(_dlq.SUFFIX)]
    topic, _, consumer = stem.rpartition(".")
    return topic, consumer


def _bounds(
    c: Consumer, topic: str, partitions: list[int], from_offset: int | None, to_offset: int | None
) -> _kafka.Bounds:
    """Per partition ``[start, end)`` within what a read_committed reader can reach now."""
    out = {}
    for p, (lo, stable) in _kafka.stable_bounds(c, topic, partitions).items():
        start = max(lo, from_offset if from_offset is not None else lo)
        end = min(stable, to_offset + 1 if to_offset is not None else stable)
        if start < end:
            out[p] = (start, end)
    return out


def _read(c: Consumer, topic: str, bounds: _kafka.Bounds) -> Iterator[DlqRecord]:
    """Records of ``topic`` inside ``bounds``, in offset order per partition, then stop."""
    for msg in _kafka.read_range(c, topic, bounds):
        yield DlqRecord(
            topic, msg.partition(), msg.offset(), msg.key(), msg.value(), list(msg.headers() or [])
        )


def read_dlq(
    connections: Connections,
    topic: str,
    *,
    partition: int | None = None,
    from_offset: int | None = None,
    to_offset: int | None = None,
    limit: int | None = None,
) -> list[DlqRecord]:
    """Records of a dead-letter topic with their failure headers (nothing is committed)."""
    parts = _kafka.partitions_of(connections, topic)
    if partition is not None:
        parts = [p for p in parts if p == partition]
    c = Consumer(_kafka.consumer_conf(connections, f"cdcrouter-dlq-read-{uuid.uuid4().hex[:8]}"))
    try:
        out = []
        for rec in _read(c, topic, _bounds(c, topic, parts, from_offset, to_offset)):
            out.append(rec)
            if limit is not None and len(out) >= limit:
                break
        return out
    finally:
        c.close()


def replay(
    connections: Connections,
    topic: str,
    *,
    to_topic: str | None = None,
    app: ConsumerApp | None = None,
    partition: int | None = None,
    from_offset: int | None = None,
    to_offset: int | None = None,
    force: bool = False,
    chunk: int = 500,
) -> ReplayResult:
    """Replay a dead-letter topic to its origin topic (or ``to_topic``), or into ``app``'s handlers.

    Records already replayed by an earlier run are skipped unless ``force``.
    """
    if topic.endswith(_dlq.CAPTURE_SUFFIX):
        raise ConsumerError(
            f"{topic} is capture's dead-letter topic: its letters describe changes too large for the "
            "raw topic and hold no record to replay",
            hint=_dlq.CAPTURE_DLQ_HINT,
        )
    if not topic.endswith(_dlq.SUFFIX):
        raise ConsumerError(f"{topic} is not a dead-letter topic", hint="see cdcrouter dlq list")
    parts = _kafka.partitions_of(connections, topic)
    if partition is not None:
        parts = [p for p in parts if p == partition]
    group = f"{topic}.replay" + (".handler" if app is not None else "")
    c = Consumer(_kafka.consumer_conf(connections, group))
    result = ReplayResult()
    try:
        bounds = _bounds(c, topic, parts, from_offset, to_offset)
        if not force:
            committed = {
                tp.partition: tp.offset
                for tp in c.committed([TopicPartition(topic, p) for p in bounds], timeout=10)
            }
            moved = {}
            for p, (start, end) in list(bounds.items()):
                done = committed.get(p, OFFSET_BEGINNING)
                if done > start:
                    moved[p] = (start, min(done, end))
                    if done >= end:
                        del bounds[p]
                    else:
                        bounds[p] = (done, end)
            # count the records skipped, not the offsets (markers of a transactional DLQ take some)
            result.skipped = sum(1 for _ in _kafka.read_range(c, topic, moved))
        if app is not None:
            _into_app(connections, c, topic, bounds, app, result)
        else:
            _to_topic(connections, c, topic, bounds, to_topic, chunk, result)
    finally:
        c.close()
    return result


def _into_app(
    connections: Connections,
    c: Consumer,
    topic: str,
    bounds: dict[int, tuple[int, int]],
    app: ConsumerApp,
    result: ReplayResult,
) -> None:
    with app:
        for rec in _read(c, topic, bounds):
            if rec.value is None and "value.omitted" in rec.failure:  # too large for the DLQ: fetch it
                rec = dataclasses.replace(rec, value=_original_value(connections, rec))
            original = _AsOriginal(rec)
            app.handle(original, topic=original.topic())
            c.commit(offsets=[TopicPartition(topic, rec.partition, rec.offset + 1)], asynchronous=False)
            result.replayed += 1
            result.targets[original.topic()] = result.targets.get(original.topic(), 0) + 1


def _original_value(connections: Connections, rec: DlqRecord) -> bytes:
    """The value a dead letter left out (it was too large for the DLQ), read where its headers say
    the record is; replaying the letter as it is would write a record without a value."""
    f = rec.failure
    where = f"{f.get('topic')}[{f.get('partition')}]@{f.get('offset')}"
    try:
        tp = TopicPartition(f["topic"], int(f["partition"]), int(f["offset"]))
    except (KeyError, ValueError):
        tp = None
    if tp is None or tp.partition < 0 or tp.offset < 0:
        raise ConsumerError(
            f"{rec.topic}[{rec.partition}]@{rec.offset} has no value and no position to read it "
            f"from ({where})",
            hint="produce the record yourself, then replay from the next offset (--from-offset)",
        )
    c = Consumer(_kafka.consumer_conf(connections, f"cdcrouter-dlq-read-{uuid.uuid4().hex[:8]}"))
    try:
        for msg in _kafka.read_range(
            c, tp.topic, {tp.partition: (tp.offset, tp.offset + 1)}, idle_timeout=15
        ):
            if msg.value() is not None:
                return msg.value()
    finally:
        c.close()
    raise ConsumerError(
        f"{rec.topic}[{rec.partition}]@{rec.offset} left its value out, and {where} no longer holds it",
        hint="the record is past the topic's retention; produce it yourself, then replay from the "
        "next offset (--from-offset)",
    )


def _to_topic(
    connections: Connections,
    c: Consumer,
    topic: str,
    bounds: dict[int, tuple[int, int]],
    to_topic: str | None,
    chunk: int,
    result: ReplayResult,
) -> None:
    if not bounds:
        return
    producer = Producer(
        _kafka.producer_conf(
            connections,
            **{
                "transactional.id": f"cdcrouter-dlq-replay.{topic}",
                "message.max.bytes": _kafka.DLQ_MAX_MESSAGE_BYTES,  # what a dead letter can hold
            },
        )
    )
    pending: dict[int, int] = {}
    in_txn = 0
    try:
        producer.init_transactions(30)

        def commit() -> None:
            nonlocal in_txn
            offsets = [TopicPartition(topic, p, off) for p, off in pending.items()]
            producer.send_offsets_to_transaction(offsets, c.consumer_group_metadata(), 30)
            producer.commit_transaction(60)
            pending.clear()
            in_txn = 0

        for rec in _read(c, topic, bounds):
            target = to_topic or rec.failure.get("topic")
            if not target:
                raise ConsumerError(
                    f"{topic}[{rec.partition}]@{rec.offset} has no origin topic header",
                    hint="pass --to-topic",
                )
            if in_txn == 0:
                producer.begin_transaction()
            headers = [
                *_dlq.strip(rec.headers),
                (REPLAY_HEADER, f"{topic}:{rec.partition}:{rec.offset}".encode()),
            ]
            value = rec.value
            if value is None and "value.omitted" in rec.failure:  # too large for the DLQ: fetch it
                value = _original_value(connections, rec)
            producer.produce(target, key=rec.key, value=value, headers=headers)
            pending[rec.partition] = rec.offset + 1
            in_txn += 1
            result.replayed += 1
            result.targets[target] = result.targets.get(target, 0) + 1
            if in_txn >= chunk:
                commit()
        if in_txn:
            commit()
    except KafkaException as exc:
        if in_txn:
            producer.abort_transaction(30)
        raise ConsumerError(
            f"replay of {topic} failed: {exc}",
            hint="nothing past the last committed chunk was replayed; re-run",
        ) from exc
    except BaseException:
        # e.g. a record without an origin topic: an open transaction would hold back every
        # read_committed reader of the target (its last stable offset) until it timed out
        if in_txn:
            producer.abort_transaction(30)
        raise
    finally:
        producer.flush(10)
