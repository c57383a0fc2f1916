"""Chunked snapshots on the real stack: chunks are readable (read_committed) before the snapshot
ends, other tables stream meanwhile, and a row changed inside its chunk's window is never
reported stale after its newer change (oracle: the table itself, read from PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import psycopg
import pytest
from capture_helpers import CaptureRun, make_pipeline, read_topic
from confluent_kafka import Consumer, TopicPartition

from cdcrouter.capture import CaptureEngine
from cdcrouter.capture.sink import ensure_topics, read_offsets
from cdcrouter.capture.snapshot import SnapshotRunner

pytestmark = pytest.mark.integration

ROWS, CHUNK = 6000, 50


def start_engine(run: CaptureRun) -> CaptureEngine:
    """The engine on a thread, without waiting for its snapshot (CaptureRun.stop() ends it)."""
    engine = CaptureEngine(run.pipeline, run.conns, progress=lambda _m: None)
    stop, errors = threading.Event(), []

    def target() -> None:
        try:
            engine.run(stop)
        except BaseException as exc:
            errors.append(exc)
            engine.streaming.set()
            engine.ready.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    engine.errors = errors  # type: ignore[attr-defined]
    run.engines.append((engine, thread, stop))
    assert engine.streaming.wait(60), "capture did not start streaming within 60 s"
    assert not errors, errors
    return engine


def final_state(records: list[tuple[bytes, dict[str, Any]]], table: str) -> dict[str, dict[str, Any]]:
    """Replay the events of ``table`` in partition order: the state a consumer ends up with."""
    state: dict[str, dict[str, Any]] = {}
    for key, event in records:
        meta = event["sourceMetadata"]
        if meta["table"] != table:
            continue
        attrs = event["eventBody"]["entities"][0]["updatedAttributes"]
        if meta["operation"] == "DELETE":
            state.pop(key.decode(), None)
        elif meta["operation"] in ("INSERT", "SNAPSHOT"):
            state[key.decode()] = dict(attrs)
        else:
            state.setdefault(key.decode(), {}).update(attrs)
    return state


class FirstSnapshotRow:
    """A read_committed consumer noting when the first SNAPSHOT record becomes readable."""

    def __init__(self, run: CaptureRun) -> None:
        self.seen_at: float | None = None
        self.stop = threading.Event()
        self.consumer = Consumer(
            {
                **run.conns.kafka.to_librdkafka(),
                "group.id": f"{run.topic}-first",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        self.consumer.assign([TopicPartition(run.topic, 0, 0)])
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        try:
            while not self.stop.is_set() and self.seen_at is None:
                for msg in self.consumer.consume(1000, 0.05):
                    if not msg.error() and b"SNAPSHOT" in msg.value():
                        self.seen_at = time.monotonic()
                        break
        finally:
            self.consumer.close()


def test_chunks_readable_early_other_tables_stream_and_window_changes_win(
    capture_run: CaptureRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = capture_run
    run.pipeline = make_pipeline(
        run.schema,
        run.topic.removeprefix("raw-"),
        raw_topic={"name": run.topic, "partitions": 1},
        replication={"snapshot_chunk_size": CHUNK},
        tables={"car_entities": {"entity_type": "Car"}, "loan_entities": {"entity_type": "Loan"}},
        outbox=None,
    )
    keep = {"car_entities", "loan_entities"}  # make_pipeline merges with the sample tables
    run.pipeline = run.pipeline.model_copy(
        update={"tables": {t: spec for t, spec in run.pipeline.tables.items() if t in keep}}
    )
    run.sql(
        "INSERT INTO car_entities (id, vin, make, model, model_year) "
        f"SELECT 'C' || lpad(g::text, 5, '0'), 'V' || g, 'M' || g, 'X', 0 FROM generate_series(1, {ROWS}) g"
    )
    conninfo = run.conns.postgres.conninfo()

    # Inside some chunks' windows (after the chunk's read, before its watermark), a real
    # concurrent transaction updates one row of the chunk and deletes another.
    injected: list[tuple[str, str]] = []
    reads = Counter[str]()
    original = SnapshotRunner._read

    def read_then_change(self: SnapshotRunner, plan: Any, snap: Any, limit: int) -> Any:
        seen, rows = original(self, plan, snap, limit)
        reads[snap.table] += 1
        if snap.table == "car_entities" and len(rows) > 3 and reads[snap.table] % 3 == 0:
            updated, deleted = rows[1][plan.key_pos[0]], rows[2][plan.key_pos[0]]
            with psycopg.connect(conninfo, options=f"-c search_path={run.schema}") as conn:
                conn.execute("UPDATE car_entities SET model_year = 99 WHERE id = %s", (updated,))
                conn.execute("DELETE FROM car_entities WHERE id = %s", (deleted,))
            injected.append((updated, deleted))
        return seen, rows

    monkeypatch.setattr(SnapshotRunner, "_read", read_then_change)

    # other tables keep streaming: a loan per transaction until the snapshot is done
    writer_stop = threading.Event()
    loans: list[str] = []

    def write_loans() -> None:
        with psycopg.connect(conninfo, autocommit=True, options=f"-c search_path={run.schema}") as conn:
            while not writer_stop.is_set():
                loan = f"L{len(loans):05d}"
                conn.execute("INSERT INTO loan_entities (id, customer_name) VALUES (%s, 'c')", (loan,))
                loans.append(loan)
                time.sleep(0.01)

    ensure_topics(run.conns, run.pipeline.raw_topic)
    first = FirstSnapshotRow(run)
    writer = threading.Thread(target=write_loans, daemon=True)
    try:
        engine = start_engine(run)
        writer.start()
        assert engine.ready.wait(180), "the snapshot did not finish within 180 s"
        ready_at = time.monotonic()
        writer_stop.set()
        writer.join(30)
    finally:
        writer_stop.set()
        first.stop.set()
        first.thread.join(10)
    assert first.seen_at is not None and first.seen_at < ready_at - 0.2, (
        "snapshot rows became readable only when the whole snapshot was done"
    )

    # wait for the last loan, then stop: everything before it is in Kafka
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        records = read_topic(run.conns, run.topic, timeout_s=30)
        if any(key == loans[-1].encode() for key, _ in records):
            break
        time.sleep(0.5)
    run.stop()
    records = read_topic(run.conns, run.topic, timeout_s=60)

    ops = [(e["sourceMetadata"]["table"], e["sourceMetadata"]["operation"]) for _, e in records]
    last_snapshot = max(i for i, op in enumerate(ops) if op == ("car_entities", "SNAPSHOT"))
    first_loan = ops.index(("loan_entities", "INSERT"))
    assert first_loan < last_snapshot, "no loan was streamed before the snapshot's last chunk"
    assert sum(1 for op in ops if op == ("loan_entities", "INSERT")) == len(loans)

    snapshots = Counter(k for k, e in records if e["sourceMetadata"]["operation"] == "SNAPSHOT")
    assert max(snapshots.values()) == 1, "a row was snapshotted twice"
    assert len(injected) >= 10, f"only {len(injected)} chunk windows got a concurrent change"

    with psycopg.connect(conninfo, options=f"-c search_path={run.schema}") as conn:
        table = {
            r[0]: r[1:] for r in conn.execute("SELECT id, model_year::text, vin, make FROM car_entities")
        }
    state = final_state(records, "car_entities")
    resurrected, lost = sorted(state.keys() - table.keys()), sorted(table.keys() - state.keys())
    assert not resurrected and not lost, f"resurrected: {resurrected[:5]}, lost: {lost[:5]}"
    # every column, not only the updated one: a row updated in its window still arrives whole
    seen = {k: (s.get("model_year"), s.get("vin"), s.get("make")) for k, s in state.items()}
    stale = {k: (v, table[k]) for k, v in seen.items() if v != table[k]}
    assert not stale, f"stale or incomplete after a newer change: {list(stale.items())[:5]}"
    # each injected change supersedes its row, unless the chunk was read again after it
    assert engine.stats.snapshot_rows_superseded >= len(injected)
    done = read_offsets(run.conns, run.pipeline.raw_topic.offsets_topic, run.pipeline.replication.slot)
    assert done is not None and done.snapshot_done and not done.snapshot


def test_composite_primary_key_chunks_cover_every_row_once(capture_run: CaptureRun) -> None:
    """Keyset pagination on a two-column key (text, integer): the row comparison resumes after
    the last key of each chunk, in the key's own order, without skipping or repeating."""
    run = capture_run
    run.sql(
        "CREATE TABLE pairs (region text, n integer, label text, PRIMARY KEY (region, n))",
        "INSERT INTO pairs SELECT r, g, 'x' FROM unnest(ARRAY['b', 'a', 'c']) r, generate_series(1, 70) g",
    )
    base = make_pipeline(
        run.schema,
        run.topic.removeprefix("raw-"),
        raw_topic={"name": run.topic, "partitions": 1},
        replication={"snapshot_chunk_size": 16},
        tables={"pairs": {"entity_type": "Pair"}},
        outbox=None,
    )
    run.pipeline = base.model_copy(update={"tables": {"pairs": base.tables["pairs"]}})
    run.start()
    records = read_topic(run.conns, run.topic, expect=210)
    keys = [k.decode() for k, e in records if e["sourceMetadata"]["operation"] == "SNAPSHOT"]
    assert len(keys) == 210 == len(set(keys))
    assert keys == [f"{r}:{n}" for r in "abc" for n in range(1, 71)]  # key order, chunk after chunk
