"""A replication slot that exists while Kafka holds no capture position for it.

The one case where that is harmless: capture created the slot and stopped before its first
position reached Kafka (the raw topic is empty: nothing was sent). With ``snapshot: initial`` the
slot is dropped and created again (a new snapshot point); with ``snapshot: never`` nothing would
stand in for the changes the slot holds, so capture resumes from it. Any other case (the offsets
topic not mirrored yet after a DR failover, deleted, or a pipeline pointed at another cluster)
means the slot may hold changes that were never sent: dropping it would lose them silently.
Capture then stops, unless told which way to go (``--from-slot``: resume from the slot;
``--resnapshot``: a new slot and snapshot).
"""

from __future__ import annotations

import time

import psycopg
from confluent_kafka import Consumer, TopicPartition

from cdcrouter.capture.pgoutput import lsn_to_str
from cdcrouter.capture.pipeline import Pipeline
from cdcrouter.capture.sink import Offsets
from cdcrouter.capture.snapshot import TableSnapshot
from cdcrouter.config import Connections
from cdcrouter.errors import CaptureError


def raw_records(conns: Connections, topic: str) -> int:
    """How many records (committed, aborted or markers) the raw topic holds: 0 means capture
    never produced into it (a missing topic counts as empty)."""
    consumer = Consumer({**conns.kafka.to_librdkafka(), "group.id": "cdcrouter-slot-check", "log_level": 3})
    try:
        meta = consumer.list_topics(topic, timeout=15).topics.get(topic)
        if meta is None or meta.error is not None:
            return 0
        total = 0
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
            total += max(0, high - low)
        return total
    finally:
        consumer.close()


def confirmed_lsn(conn: psycopg.Connection, slot: str) -> int | None:
    row = conn.execute(
        "SELECT pg_lsn(confirmed_flush_lsn) - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    return int(row[0]) if row is not None and row[0] is not None else None


def position_at_slot(pipeline: Pipeline, confirmed: int) -> Offsets:
    """A position from which capture reads every change the slot still holds (commit LSN >=
    ``confirmed``). Whether an initial snapshot finished is unknown without the old position, so
    with ``snapshot: initial`` every table is snapshotted again (at least once, never a row short)."""
    now = int(time.time() * 1000)
    queue: tuple[dict[str, object], ...] = ()
    if pipeline.replication.snapshot == "initial":
        queue = tuple(TableSnapshot(t, "initial").to_dict() for t in pipeline.tables)
    return Offsets(
        commit_lsn=confirmed - 1,
        end_lsn=confirmed,
        snapshot_done=not queue,
        committed_at_ms=now,
        snapshot=queue,
        tables=tuple(pipeline.tables),
    )


def unsent_changes_error(pipeline: Pipeline, records: int, confirmed: int | None) -> CaptureError:
    slot, raw = pipeline.replication.slot, pipeline.raw_topic
    at = lsn_to_str(confirmed) if confirmed is not None else "unknown"
    return CaptureError(
        f"replication slot {slot} exists (confirmed up to {at}) but {raw.offsets_topic} holds no "
        f"position for it, while {raw.name} already holds {records} records: the slot may hold changes "
        "that were never sent, and recreating it would lose them, so capture does not drop it",
        hint="if the offsets topic is still being mirrored (DR), wait for it or run `cdcrouter dr failover`; "
        "else resume from the slot with `cdcrouter capture run --from-slot` (changes Kafka already has "
        "come again under the same uuid: consumers drop them), or start over with "
        "`cdcrouter capture run --resnapshot` (new slot; existing rows sent again as SNAPSHOT events, "
        "changes the old slot held that no row shows any more are lost)",
    )
