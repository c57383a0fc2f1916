"""The Kafka side of capture: topics, the registered Avro schema, transactional produce, offsets.

The last committed source position is produced to ``<raw-topic>.capture-offsets`` (compacted,
one partition, key = slot name) inside the same Kafka transaction as the events it covers, so
Kafka holds exactly the events up to that position: no more, no less.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import struct
import time
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import fastavro
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cdcrouter._native import encode_business_event as _encode_event
from cdcrouter.capture.kafka_limits import (
    SIZE_ERRORS,
    KafkaFatal,
    Oversized,
    permanent_error,
    producer_limits,
    table_of,
    topic_max_message_bytes,
)
from cdcrouter.capture.pgoutput import lsn_to_str
from cdcrouter.capture.pipeline import RawTopic
from cdcrouter.config.connections import Connections
from cdcrouter.errors import CaptureError
from cdcrouter.transactions import DEFAULT_CAPTURE_TIMEOUT_MS, is_timeout_refused, timeout_refused

log = logging.getLogger("cdcrouter.capture")
_kafka_log = logging.getLogger("cdcrouter.capture.kafka")  # librdkafka's own log lines


def raw_schema_text() -> str:
    return files("cdcrouter").joinpath("schemas/raw-business-event.avsc").read_text()


def register_raw_schema(conns: Connections, topic: str) -> int:
    """Register BusinessEvent under ``<topic>-value`` (idempotent); returns the schema id.

    The same client, plan and compatibility level (FULL_TRANSITIVE) as ``cdcrouter schemas apply``:
    capture upgrades first, so the raw subject must refuse a schema its older readers cannot read.
    """
    from cdcrouter.schemas import raw_schema_text as contract_text
    from cdcrouter.schemas.registry import RegistryClient, SchemaRegistryError, ensure_schema, subject_for

    try:
        with RegistryClient(conns.registry.to_client_conf()) as client:
            return ensure_schema(client, subject_for(topic), contract_text())
    except SchemaRegistryError as exc:
        raise CaptureError(exc.message, hint=exc.hint) from exc


class AvroEncoder:
    """BusinessEvent dict -> Confluent wire format (magic 0, schema id, Avro binary).

    Uses ``cdcrouter._native.encode_business_event`` (fastavro's bytes, pinned by
    tests/test_native_codec.py; the extension is required, so there is no Python fallback).
    Streamed table changes do not come through here: :mod:`cdcrouter.capture.fastpath` encodes
    them straight from the pgoutput message.
    """

    def __init__(self, schema_id: int) -> None:
        self.schema = fastavro.parse_schema(json.loads(raw_schema_text()))
        self.prefix = b"\x00" + struct.pack(">I", schema_id)

    def encode(self, event: dict[str, Any]) -> bytes:
        return self.prefix + _encode_event(event)

    def encode_generic(self, event: dict[str, Any]) -> bytes:
        """The same through fastavro's generic writer (reference for tests and benchmarks)."""
        buf = io.BytesIO()
        buf.write(self.prefix)
        fastavro.schemaless_writer(buf, self.schema, event)
        return buf.getvalue()


def ensure_topics(conns: Connections, raw: RawTopic) -> None:
    """Create the raw topic, its offsets topic and its dead-letter topic unless they exist."""
    admin = AdminClient({**conns.kafka.to_librdkafka(), "logger": _kafka_log})
    wanted = [
        NewTopic(
            raw.name,
            num_partitions=raw.partitions,
            replication_factor=raw.replication_factor,
            config={"retention.ms": str(raw.retention_ms), "max.message.bytes": str(raw.max_message_bytes)},
        ),
        NewTopic(
            raw.offsets_topic,
            num_partitions=1,
            replication_factor=raw.replication_factor,
            config={"cleanup.policy": "compact"},
        ),
        NewTopic(raw.dlq_topic, num_partitions=1, replication_factor=raw.replication_factor),
    ]
    futures = admin.create_topics(wanted, request_timeout=30)
    for name, fut in futures.items():
        try:
            fut.result(timeout=60)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise CaptureError(
                f"cannot create topic {name} on {conns.kafka.bootstrap_servers}: {err.str()}",
                hint="check the Kafka connection, ACLs (CREATE on the cluster) and replication_factor",
            ) from exc
        except Exception as exc:
            raise CaptureError(
                f"cannot create topic {name} on {conns.kafka.bootstrap_servers}: {exc}",
                hint="is Kafka running? `cdcrouter stack up --only kafka`, or check connections.kafka",
            ) from exc
    await_topics(admin, [t.topic for t in wanted])


TOPICS_VISIBLE_S = 60.0  # a broker applied a new topic 15.7 s after its controller did (1,000-topic load)


def await_topics(admin: AdminClient, topics: list[str], timeout_s: float = TOPICS_VISIBLE_S) -> None:
    """Return once the broker's metadata shows every topic: CreateTopics returns when the KRaft
    controller has the topic, and a busy broker knows it only later (describing or producing to it
    before then fails with UNKNOWN_TOPIC_OR_PART)."""
    deadline = time.monotonic() + timeout_s
    waiting = list(topics)
    while waiting:
        try:
            meta = admin.list_topics(waiting[0], timeout=min(10.0, timeout_s)).topics.get(waiting[0])
        except KafkaException:
            meta = None  # the broker did not answer in time: try again until the deadline
        if meta is not None and meta.error is None and meta.partitions:
            waiting.pop(0)
            continue
        if time.monotonic() >= deadline:
            raise CaptureError(
                f"topic {waiting[0]} was created but the broker still does not know it "
                f"after {timeout_s:.0f} s",
                hint="the broker is overloaded or its metadata is stuck; check its log, then restart capture",
            )
        time.sleep(0.2)


@dataclass(frozen=True, slots=True)
class Offsets:
    """What Kafka has committed for one slot: the last PostgreSQL transaction fully in Kafka, and
    how far the snapshots have got (each chunk is committed together with this record)."""

    commit_lsn: int = 0  # final LSN of that transaction (later transactions have larger ones)
    end_lsn: int = 0  # where streaming resumes
    snapshot_done: bool = False  # no snapshot pending (records before chunked snapshots: always true)
    events_total: int = 0
    committed_at_ms: int = 0
    last_commit_ms: int = 0  # the source commit time of that transaction
    rate: float = 0.0  # events/s over the last progress window
    # pending table snapshots, the first one in progress (see capture/snapshot.py TableSnapshot)
    snapshot: tuple[dict[str, Any], ...] = ()
    # the captured tables this slot knows (a table added to the pipeline later gets a snapshot);
    # None in records written before this field existed
    tables: tuple[str, ...] | None = None
    # a PostgreSQL transaction too long for one Kafka transaction is committed in parts: its final
    # LSN, and the LSN of its last change in Kafka (0, 0: none; a restart skips up to that change)
    partial_lsn: int = 0
    partial_through: int = 0
    # the PostgreSQL timeline the positions are on: a capture started after a promotion checks the
    # new server's history against it (capture/failover.py); None in records written before
    timeline: int | None = None
    # the leaf partitions (oids) of each captured partitioned table that capture has snapshotted
    # or streamed: one attached while capture was stopped is snapshotted at start-up; None in
    # records written before this field existed
    partitions: dict[str, tuple[int, ...]] | None = None

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "commit_lsn": self.commit_lsn,
            "end_lsn": self.end_lsn,
            "snapshot_done": self.snapshot_done,
            "events_total": self.events_total,
            "committed_at_ms": self.committed_at_ms,
            "last_commit_ms": self.last_commit_ms,
            "rate": round(self.rate, 1),
            "snapshot": list(self.snapshot),
        }
        if self.tables is not None:
            doc["tables"] = list(self.tables)
        if self.partial_lsn:
            doc["partial_lsn"], doc["partial_through"] = self.partial_lsn, self.partial_through
        if self.timeline is not None:
            doc["timeline"] = self.timeline
        if self.partitions is not None:
            doc["partitions"] = {t: list(oids) for t, oids in self.partitions.items()}
        return json.dumps(doc).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Offsets:
        d = json.loads(data)
        out = {k: d[k] for k in cls.__slots__ if k in d}  # type: ignore[attr-defined]
        if "snapshot" in out:
            out["snapshot"] = tuple(out["snapshot"])
        if out.get("tables") is not None:
            out["tables"] = tuple(out["tables"])
        if out.get("partitions") is not None:
            out["partitions"] = {t: tuple(oids) for t, oids in out["partitions"].items()}
        return cls(**out)


def read_offsets(
    conns: Connections, topic: str, slot: str, timeout_s: float = 30.0, stall_s: float | None = None
) -> Offsets | None:
    """The last committed offsets record for ``slot`` (read_committed), or None if there is none
    (nor the topic: capture creates it on its first run, so every caller reads that as "capture has
    committed nothing yet", at once).

    Reads up to the end offset seen at the start. A running capture commits continuously, so the
    end-of-partition event alone can be minutes away. ``stall_s`` (for ``capture status``): stop
    when nothing new arrives that long, because a crashed capture's open transaction holds
    read_committed readers back until its producer is fenced or times out.
    """
    conf = {
        **conns.kafka.to_librdkafka(),
        "group.id": f"cdcrouter-capture-offsets-reader-{slot}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "log_level": 3,
        "logger": _kafka_log,
    }
    consumer = Consumer(conf)
    try:
        if _unknown_topic(consumer, topic, min(10.0, timeout_s)):
            return None  # capture creates the topic on its first run: no position was ever committed
        tp = TopicPartition(topic, 0, 0)
        consumer.assign([tp])
        try:
            _low, end = consumer.get_watermark_offsets(tp, timeout=min(10.0, timeout_s))
        except KafkaException:
            end = None  # an unknown topic shows up as an error from poll below
        last: Offsets | None = None
        deadline = time.monotonic() + timeout_s
        progress_at = time.monotonic()
        key = slot.encode()
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                if end is not None and _position(consumer, tp) >= end:
                    return last  # the end ends with a transaction marker, never delivered
                if stall_s is not None and time.monotonic() - progress_at >= stall_s:
                    return last
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    return last
                if msg.error().code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                    return None
                raise CaptureError(
                    f"cannot read {topic}: {msg.error().str()}", hint="check the Kafka connection and ACLs"
                )
            progress_at = time.monotonic()
            if msg.key() == key and msg.value() is not None:
                last = Offsets.from_json(msg.value())
            if end is not None and msg.offset() + 1 >= end:
                return last
        raise CaptureError(
            f"timed out reading the committed capture position from {topic}",
            hint="is Kafka reachable? a stuck transaction clears after transaction.timeout.ms",
        )
    finally:
        consumer.close()


def _unknown_topic(consumer: Consumer, topic: str, timeout_s: float) -> bool:
    """Does the broker say the topic does not exist? An assigned unknown partition is not reported
    by poll: the read waited out its whole timeout and failed with "timed out"."""
    try:
        md = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    except KafkaException:
        return False  # the broker is not answering: the read below reports that
    return md is not None and md.error is not None and md.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def _position(consumer: Consumer, tp: TopicPartition) -> int:
    pos = consumer.position([tp])[0].offset
    return pos if pos >= 0 else 0


class KafkaSinkError(CaptureError):
    """Kafka failed under the producer (broker restart, fencing, timeout). The engine recreates
    the producer, reads the committed position back and resumes from there."""


class RecordsRejected(KafkaSinkError):
    """The broker refused records of the transaction as too large (the topic's limit is lower than
    the producer was sized for). The transaction is aborted; the engine replays the batch through a
    producer limited to ``next_cap`` bytes, so those records fail at produce() and are
    dead-lettered, while every other record goes through."""

    def __init__(self, message: str, next_cap: int) -> None:
        super().__init__(message, hint="capture replays the batch with the refused records dead-lettered")
        self.next_cap = next_cap


# librdkafka's queue, bounded (#17 item 6): when it is full, produce() waits for deliveries
# (:meth:`TransactionalSink._produce_waiting`), so memory stays flat however large the backlog. The
# bounds hold a whole default transaction (``batching.max_events`` 20,000) with room for the filtered
# copies fused mode adds to it; the byte bound always takes two of the largest records the topic
# allows. Deliveries free the room as the transaction goes on: a transaction may be larger.
QUEUE_MAX_MESSAGES = 100_000
QUEUE_MAX_KBYTES = 64 * 1024

TOPIC_CHECK_S = 5.0  # a commit whose records are not delivered this long checks that its topics exist
_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})  # our own abort's doing


LANES_MAX = 3  # transactional ids a slot may use; every sink fences all of them (capture_ids)


def capture_ids(slot: str) -> list[str]:
    """The transactional ids of a slot's capture, one per lane: the first is the only one a
    one-lane sink writes with, fused mode takes turns over all (see :class:`TransactionalSink`)."""
    first = f"cdcrouter-capture-{slot}"
    return [first] + [f"{first}.lane{i}" for i in range(1, LANES_MAX)]


class TransactionalSink:
    """One transactional producer per lane: ``transactional.id`` fences a zombie predecessor.

    With ``lanes=3`` (fused mode) consecutive transactions take turns over three producers. They
    never overlap: a lane begins only after the previous lane's commit returned, so every partition
    gets the transactions' records in commit order and the offsets topic's last committed position
    is the newest. What that buys: the broker answers a commit before it has written the commit
    markers, and the same transactional id cannot add partitions to its next transaction until
    they are written (CONCURRENT_TRANSACTIONS, which librdkafka retries after 20 ms). Fused
    transactions touch many partitions (raw, filtered, position), so that wait hit often and made
    fused mode's p99 (docs/capture.md, "Fused mode"). A lane used two commits ago has no such wait
    (two lanes still waited now and then on a loaded 2-core box, three did not).
    Every sink fences all of a slot's ids (:func:`capture_ids`): a killed fused capture's open
    transaction on another lane would hold the offsets topic's last stable offset back, and a
    restart would read back a position older than the one committed after it.

    The producer is sized from the raw topic's ``max.message.bytes`` (see
    :mod:`cdcrouter.capture.kafka_limits`); ``size_cap`` lowers that after the broker refused records.
    """

    QUEUE_MAX_MESSAGES = QUEUE_MAX_MESSAGES
    QUEUE_MAX_KBYTES = QUEUE_MAX_KBYTES

    def __init__(
        self,
        conns: Connections,
        raw: RawTopic,
        slot: str,
        *,
        size_cap: int | None = None,
        transaction_timeout_ms: int = DEFAULT_CAPTURE_TIMEOUT_MS,
        lanes: int = 1,
    ) -> None:
        self.raw = raw
        self.slot_key = slot.encode()
        kafka = conns.kafka.to_librdkafka()
        self._kafka = kafka
        limits = producer_limits(topic_max_message_bytes(kafka, raw.name, raw.max_message_bytes), size_cap)
        self.limit = limits["message.max.bytes"]  # the largest record (key + value + framing) it takes
        self.failed: list[tuple[str, int, KafkaError]] = []  # delivery errors: topic, size, error
        self.dead_letters = 0
        self._schema: Any = None
        self._conf = {
            **conns.kafka.producer_conf(),
            # no transaction needs long (snapshots commit chunk by chunk): a crashed capture's
            # open transaction holds read_committed readers back for at most this long
            "transaction.timeout.ms": transaction_timeout_ms,
            "linger.ms": 5,
            "queue.buffering.max.messages": self.QUEUE_MAX_MESSAGES,
            "queue.buffering.max.kbytes": max(
                self.QUEUE_MAX_KBYTES, 2 * limits["message.max.bytes"] // 1024 + 1
            ),
            **limits,
            # only failures call back: nothing per record on the hot path
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
            "logger": _kafka_log,
        }
        ids = capture_ids(slot)
        self.lanes = [self._transactional(tid, conns) for tid in ids[:lanes]]
        for tid in ids[lanes:]:  # unused here: fenced, so no open transaction of it lingers
            self._transactional(tid, conns).flush(0)
        self._lane = 0
        self.producer = self.lanes[0]
        self.produce = self.producer.produce  # hot path: bound method (one lane only)
        self.in_transaction = False
        self.began = 0.0
        self.longest_s = 0.0  # the longest transaction so far, begin to commit (benchmarks)

    def _transactional(self, transactional_id: str, conns: Connections) -> Producer:
        """A producer with ``transactional_id``, initialised: a predecessor's open transaction aborted."""
        producer = Producer({**self._conf, "transactional.id": transactional_id})
        try:
            producer.init_transactions(60)
        except KafkaException as exc:
            err = exc.args[0]
            what = f"cannot initialise Kafka transactions on {conns.kafka.bootstrap_servers}"
            if is_timeout_refused(err):
                message, hint = timeout_refused(
                    what,
                    "transactions.capture_timeout_ms in pipeline.yaml",
                    self._conf["transaction.timeout.ms"],
                    self._kafka,
                )
                raise KafkaFatal(message, hint=hint) from exc
            raise permanent_error(err, what) or KafkaSinkError(
                f"{what}: {err.str()}",
                hint="is Kafka running and does the user have WRITE on TransactionalId cdcrouter-capture-*?",
            ) from exc
        return producer

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None and err.code() not in _PURGED:
            self.failed.append((msg.topic(), len(msg.key() or b"") + len(msg.value() or b""), err))

    def begin(self) -> None:
        if not self.in_transaction:
            if len(self.lanes) > 1:  # the other lane: its id has no commit markers still being written
                self._lane = (self._lane + 1) % len(self.lanes)
                self.producer = self.lanes[self._lane]
            try:
                self.producer.begin_transaction()
            except KafkaException as exc:
                raise self._failure(exc.args[0], "cannot begin a Kafka transaction") from exc
            self.in_transaction = True
            self.began = time.monotonic()

    def produce_event(self, key: bytes, value: bytes, topic: str | None = None, lsn: int = 0) -> bool:
        """Produce into the open transaction (the raw topic unless ``topic`` says otherwise).

        Returns True when the record was too large for the raw topic and a dead letter describing
        it (``lsn``: the change's WAL position) went to the capture DLQ instead, in the same txn.
        """
        target = topic or self.raw.name
        while True:
            try:
                self.produce(target, value, key)
                return False
            except BufferError:
                self._wait_for_room(target)
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() in SIZE_ERRORS and topic is None:
                    self._dead_letter(key, value, lsn, err)
                    return True
                raise self._failure(err, f"cannot produce to {target}") from exc

    def _produce_waiting(self, topic: str, value: bytes, key: bytes, **kw: Any) -> None:
        """The producer's own produce(), waiting while the bounded queue is full."""
        while True:
            try:
                self.producer.produce(topic, value, key, **kw)
                return
            except BufferError:
                self._wait_for_room(topic)

    def _wait_for_room(self, topic: str) -> None:
        """Serve delivery reports while the bounded queue is full (a fatal producer raises here)."""
        try:
            self.producer.poll(0.05)
        except KafkaException as exc:
            raise self._failure(exc.args[0], f"cannot produce to {topic}") from exc
        if self.failed:
            raise self._failure(None, f"cannot produce to {topic}") from None

    def _dead_letter(self, key: bytes, value: bytes, lsn: int, err: KafkaError) -> None:
        if self._schema is None:
            self._schema = fastavro.parse_schema(json.loads(raw_schema_text()))
        table = table_of(value, self._schema)
        letter = Oversized(key, len(key) + len(value), self.limit, lsn, table, err.str())
        try:
            self._produce_waiting(self.raw.dlq_topic, letter.letter(), key, headers=letter.headers())
        except KafkaException as exc:
            raise self._failure(exc.args[0], f"cannot dead-letter to {self.raw.dlq_topic}") from exc
        self.dead_letters += 1
        log.warning(
            "dead-lettered a change of %s to %s: %s bytes, the raw topic takes %s (entity %s, LSN %s)",
            table or "?",
            self.raw.dlq_topic,
            letter.size,
            letter.limit,
            key.decode(errors="replace"),
            lsn_to_str(lsn) if lsn else "?",
        )

    def _failure(self, err: KafkaError | None, what: str) -> CaptureError:
        """The error to raise: a refused record first, then anything a retry cannot fix."""
        # serve pending delivery reports: they name the real cause. A fenced or otherwise fatal
        # producer raises its fatal error here; `err` already says it, and the caller replaces it
        with contextlib.suppress(KafkaException):
            self.producer.poll(0.1)
        if self.failed:
            return self._rejected()
        assert err is not None
        return permanent_error(err, what) or KafkaSinkError(f"{what}: {err.str()}")

    def _rejected(self) -> CaptureError:
        """Abort after delivery failures; say what to do about them."""
        failed, self.failed = self.failed, []
        self.in_transaction = False
        with contextlib.suppress(KafkaException):
            self.producer.abort_transaction(30)
        for topic, _size, err in failed:
            if err.code() not in SIZE_ERRORS:
                return permanent_error(err, f"Kafka refused a record for {topic}") or KafkaSinkError(
                    f"Kafka could not deliver a record to {topic}: {err.str()}"
                )
        others = sorted({t for t, _s, _e in failed if t != self.raw.name})
        if others:  # a smaller record limit would not help: the offsets or dead-letter topic is too small
            return KafkaFatal(
                f"Kafka refused a record for {', '.join(others)} as too large; retrying cannot fix this",
                hint="raise that topic's max.message.bytes (kafka-configs --alter), then restart capture",
            )
        largest = max(size for _t, size, _e in failed)
        # size again from the topic (lowered under us?); if it still claims room, trust the broker
        try:
            described = topic_max_message_bytes(self._kafka, self.raw.name, self.raw.max_message_bytes)
        except CaptureError:
            described = largest  # not known now: the refusal alone says enough
        fresh = producer_limits(described)["message.max.bytes"]
        next_cap = fresh if fresh < largest else largest - 1
        topics = sorted({t for t, _s, _e in failed})
        return RecordsRejected(
            f"the broker refused {len(failed)} record(s) for {', '.join(topics)} as too large "
            f"(largest {largest} bytes; the producer allowed {self.limit})",
            next_cap,
        )

    def _missing_topic(self) -> str | None:
        """The raw or offsets topic if the broker says it does not exist (None when it cannot say)."""
        for topic in (self.raw.name, self.raw.offsets_topic):
            try:
                meta = self.producer.list_topics(topic, timeout=5).topics.get(topic)
            except KafkaException:
                return None
            if meta is None or (
                meta.error is not None and meta.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            ):
                return topic
        return None

    def _check_topics(self) -> None:
        """Raise KafkaFatal if the raw or offsets topic is gone."""
        missing = self._missing_topic()
        if missing is not None:
            self.abort()
            fatal = permanent_error(
                KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART), f"cannot deliver to {missing}"
            )
            assert fatal is not None
            raise fatal

    def commit(self, offsets: Offsets) -> None:
        """Write the position and commit: the events and the position become visible together.

        Raises:
            KafkaSinkError: the commit failed (nothing was acknowledged to PostgreSQL).
            KafkaFatal: Kafka refused something a retry cannot fix.
        """
        self.begin()  # a position alone still needs a begun transaction (librdkafka: "Erroneous state")
        try:
            self._produce_waiting(self.raw.offsets_topic, offsets.to_json(), self.slot_key)
        except KafkaException as exc:
            raise self._failure(exc.args[0], "cannot produce the capture position") from exc
        # a refused record leaves the transaction abortable, and commit_transaction would wait out
        # its whole timeout for it: deliver first, and abort as soon as a delivery fails
        started = time.monotonic()
        next_check = started + TOPIC_CHECK_S
        try:
            while self.producer.flush(0.1) and not self.failed:
                now = time.monotonic()
                if now - started > 120:
                    break  # commit_transaction reports what is wrong
                if now >= next_check:  # slow: a deleted topic holds records until they time out
                    next_check = now + TOPIC_CHECK_S
                    self._check_topics()
        except KafkaException as exc:  # a fenced (fatal) producer raises its error from flush
            raise self._failure(exc.args[0], "cannot deliver the transaction's records") from exc
        if self.failed:
            raise self._rejected()
        for attempt in range(3):
            try:
                self.producer.commit_transaction(120)
                break
            except KafkaException as exc:
                err = exc.args[0]
                if self.failed:
                    raise self._rejected() from exc
                if err.retriable() and attempt < 2:
                    continue  # librdkafka allows retrying a retriable commit
                self.in_transaction = False
                if err.txn_requires_abort():
                    with contextlib.suppress(KafkaException):
                        self.producer.abort_transaction(30)
                what = "Kafka transaction commit failed"
                if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    what += f" (topic {self._missing_topic() or '?'} is missing)"
                fatal = permanent_error(err, what)
                if fatal is not None:
                    raise fatal from exc
                raise KafkaSinkError(
                    f"Kafka transaction commit failed: {err.str()}",
                    hint="capture resumes from the last committed position; nothing was acknowledged",
                ) from exc
        self.in_transaction = False
        self.longest_s = max(self.longest_s, time.monotonic() - self.began)  # begin -> committed

    def abort(self) -> None:
        """Abort the open transaction, if any (a failing broker is the caller's next problem)."""
        self.failed.clear()
        if self.in_transaction:
            try:
                self.producer.abort_transaction(30)
            except KafkaException as exc:
                log.warning("aborting the Kafka transaction failed: %s", exc.args[0].str())
            finally:
                self.in_transaction = False

    def close(self) -> None:
        self.abort()
        for producer in self.lanes:
            try:
                producer.flush(5)
            except KafkaException as exc:  # a fatal producer raises here: never hide the error that ended it
                log.warning("closing the Kafka producer: %s", exc.args[0].str())
