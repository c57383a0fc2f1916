"""The embedded capture engine: pgoutput -> BusinessEvent -> Avro -> Kafka, exactly once.

Loop: read pgoutput messages, normalise each change, produce it into the open Kafka
transaction; at a PostgreSQL COMMIT, once the batch is big or old enough (or the stream is
caught up), write the position to the offsets topic *in the same transaction*, commit, and only
then acknowledge the slot. A restart reads the position back from Kafka (read_committed) and
skips every transaction at or before it, so nothing is lost and nothing doubled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import os
import select
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import psycopg2
from confluent_kafka import KafkaException

from cdcrouter.capture import failover, slot_position, source
from cdcrouter.capture.avro_fast import encode_long
from cdcrouter.capture.canonical import Kind
from cdcrouter.capture.fastpath import KeyMoved, RowEncoder, fast_kind_ok
from cdcrouter.capture.kafka_limits import KafkaFatal
from cdcrouter.capture.metrics import CaptureMetrics
from cdcrouter.capture.normalize import (
    OutboxRowError,
    OutboxShape,
    RowChange,
    TableShape,
    event_key,
    moved_key,
    normalize_outbox,
    normalize_row,
    split_moved_key,
)
from cdcrouter.capture.outage import Outage
from cdcrouter.capture.pgoutput import (
    Begin,
    Change,
    Commit,
    LogicalMessage,
    PgOutputDecoder,
    Relation,
    Truncate,
    lsn_to_str,
)
from cdcrouter.capture.pipeline import Pipeline
from cdcrouter.capture.sink import (
    AvroEncoder,
    KafkaSinkError,
    Offsets,
    RecordsRejected,
    TransactionalSink,
    ensure_topics,
    read_offsets,
    register_raw_schema,
)
from cdcrouter.capture.snapshot import (
    SIGNAL_PREFIX,
    WATERMARK_PREFIX,
    SnapshotProgress,
    SnapshotRunner,
    TableSnapshot,
    describe_snapshot,
    estimate_rows,
    initial_queue,
    signal_message,
)
from cdcrouter.config.connections import Connections
from cdcrouter.errors import CaptureError

if TYPE_CHECKING:
    from cdcrouter.dr.confirm import MirrorGate
    from cdcrouter.route.fused import FusedRoutes

log = logging.getLogger("cdcrouter.capture")

_INSERT, _UPDATE, _DELETE, _BEGIN, _COMMIT, _RELATION, _TRUNCATE, _MESSAGE = (ord(c) for c in "IUDBCRTM")
_U32 = struct.Struct(">I").unpack_from
PUBLICATION_CHECK_S = 5.0  # how often an idle capture looks for captured tables dropped and created again


@dataclass
class CaptureStats:
    events: int = 0
    transactions: int = 0
    kafka_commits: int = 0
    snapshot_events: int = 0
    snapshot_rows_superseded: int = 0  # chunk rows left out: a streamed change was as new or newer
    longest_txn_ms: float = 0.0  # the longest Kafka transaction, begin to committed
    skipped_transactions: int = 0
    dead_letters: int = 0
    reconnects: int = 0
    # changes of relations the pipeline does not capture (the publication was edited by hand):
    # skipped, logged once per relation (docs/capture.md)
    unknown_relation_changes: int = 0
    last: Offsets = field(default_factory=Offsets)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class CaptureEngine:
    """Embedded capture for one pipeline. ``run()`` blocks until ``stop`` is set or time is up.

    Example (in-process, e.g. a demo or a test)::

        stop = threading.Event()
        engine = CaptureEngine(load_pipeline("pipeline.yaml"), load_connections())
        threading.Thread(target=engine.run, args=(stop,), daemon=True).start()
        ...
        stop.set()
    """

    def __init__(
        self,
        pipeline: Pipeline,
        connections: Connections,
        *,
        resnapshot: bool = False,
        from_slot: bool = False,
        progress: Callable[[str], None] | None = None,
        progress_interval_s: float = 5.0,
        reconnect_timeout_s: float = 120.0,
        snapshot_progress: Callable[[SnapshotProgress | None], None] | None = None,
        route: str | Path | None = None,
    ) -> None:
        self.pipeline = pipeline
        # fused mode (capture/fused.py): route each raw record in capture's own Kafka transaction
        self.route_path = Path(route) if route is not None else pipeline.route_path()
        self.routes: FusedRoutes | None = None
        self.conns = connections
        self.resnapshot = resnapshot
        self.from_slot = from_slot  # no position in Kafka: resume from the slot (capture/slot_position.py)
        self.progress = progress or log.info
        self.progress_interval_s = progress_interval_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self.snapshot_progress = snapshot_progress  # called after each snapshot chunk (None: done)
        self.stats = CaptureStats()
        self.streaming = threading.Event()  # set once streaming has started
        self.ready = threading.Event()  # set once streaming and no snapshot is pending
        self._infos: dict[str, source.TableInfo] = {}
        self._shapes: dict[int, TableShape | OutboxShape | None] = {}
        self._type_kinds: dict[int, tuple[str, Kind | None]] = {}  # type oid -> (name, kind)
        self._leaves: dict[str, set[int]] | None = None  # leaf partitions of partitioned tables, by table
        self._reported: set[str] = set()  # warnings already logged (once each)
        self.metrics = CaptureMetrics(lambda: self.stats, connections.postgres, pipeline.replication.slot)
        self.size_cap: int | None = None  # record limit learnt from the broker refusing records (or None)
        # what a --resnapshot after a lost slot stood in for (capture/failover.py), else None
        self.bridged: failover.BridgedWindow | None = None
        self._timeline: int | None = None  # the server's timeline at the last replication connection

    @property
    def raw_topic(self) -> str:
        return self.pipeline.raw_topic.name

    # --- setup ------------------------------------------------------------------------------

    def _prepare_source(self) -> psycopg.Connection:
        conn = source.connect_sql(self.conns.postgres)
        with source.pg_errors("cannot prepare capture", self.conns.postgres):
            source.check_wal_level(conn)
            repl = self.pipeline.replication
            source.sync_failover(conn, self.conns.postgres, repl.slot, repl.failover)
            self._infos = source.inspect_tables(conn, self.pipeline.schema, self.pipeline.captured_tables())
            source.check_tables(self.pipeline, self._infos)
            source.ensure_publication(conn, self.pipeline, self._infos)
            self._leaves = None
            self._check_attached(conn)  # the partitions there at start-up
        for line in source.generated_column_warnings(self._infos):
            self._warn_once(line)
        return conn

    def _warn_once(self, line: str) -> None:
        if line not in self._reported:
            self._reported.add(line)
            log.warning("%s", line)
            self.progress(line)

    def _check_partitions(self, table: str, conn: psycopg.Connection) -> None:
        """A partition attached while capture runs: FULL identity with ``replica_identity: full``,
        else a clear warning when PostgreSQL will refuse the application's UPDATEs on it."""
        p = self.pipeline
        with source.pg_errors(f"cannot inspect the partitions of {table}", self.conns.postgres):
            storages = source.inspect_storage(conn, p.schema, [table])
            if p.replication.replica_identity == "full":
                for st in source.set_full_identity(conn, storages):
                    self._warn_once(f"set REPLICA IDENTITY FULL on {st.label} (attached since start-up)")
                storages = source.inspect_storage(conn, p.schema, [table])
        for problem, fix in source.identity_problems(p, storages):
            self._warn_once(
                f"{problem}: PostgreSQL refuses the application's UPDATEs and DELETEs on it while it is "
                f"published; fix: {fix}"
            )

    def _check_published(self, conn: psycopg.Connection) -> None:
        """A captured table dropped and created again while capture runs is in no publication, so
        PostgreSQL sends none of its changes: put it back, and snapshot it again (its rows written
        before it was back would otherwise never arrive). A dropped one is reported once."""
        p = self.pipeline
        with source.pg_errors("cannot check the publication", self.conns.postgres):
            recreated, dropped = source.unpublished_tables(conn, p)
            gone = {
                t: f"table {p.schema}.{t} was dropped: capture sees no changes of it; create it again "
                "(capture then publishes and snapshots it) or remove it from the pipeline"
                for t in p.captured_tables()
            }
            for table in dropped:
                self._warn_once(gone[table])
            self._check_attached(conn)
            if not recreated:
                return
            self._infos.update(source.inspect_tables(conn, p.schema, recreated))
            source.check_tables(p, self._infos)
            source.ensure_publication(conn, p, self._infos)
            for table in recreated:
                if table in p.tables:
                    _sid, content = signal_message(p.replication.slot, table, None)
                    conn.execute("SELECT pg_logical_emit_message(true, %s, %s)", (SIGNAL_PREFIX, content))
                self._reported.discard(gone[table])  # a later drop is news again
                self.progress(
                    f"table {p.schema}.{table} was created again while capture ran: it is back in "
                    f"publication {p.replication.publication}, and its rows are snapshotted again"
                )

    def _check_attached(self, conn: psycopg.Connection) -> None:
        """A partition attached while capture runs brings rows into the partitioned table that no
        change ever reported: snapshot them (``tableoid`` = the partition), as for a new table."""
        p = self.pipeline
        roots = [t for t, info in self._infos.items() if info.partitioned and t in p.tables]
        if not roots:
            return
        now = source.leaf_partitions(conn, p.schema, roots)
        known, self._leaves = self._leaves, now
        if known is None:
            return  # at start-up: compared with the position's record in _snapshot_attached
        self._snapshot_partitions(conn, now, known)

    def _snapshot_partitions(
        self, conn: psycopg.Connection, now: dict[str, set[int]], known: dict[str, set[int]], when: str = ""
    ) -> None:
        """Queue a snapshot of each leaf partition in ``now`` but not in ``known`` (a signal in the
        WAL, read by the stream like ``capture snapshot``'s)."""
        p = self.pipeline
        for table, leaves in sorted(now.items()):
            for relid in sorted(leaves - known.get(table, set())):
                self._check_partitions(table, conn)  # its replica identity, as for any partition
                _sid, content = signal_message(p.replication.slot, table, f"tableoid = {relid}")
                conn.execute("SELECT pg_logical_emit_message(true, %s, %s)", (SIGNAL_PREFIX, content))
                self.progress(f"a partition was attached to {p.schema}.{table}{when}: snapshotting its rows")

    def _snapshot_attached(self, conn: psycopg.Connection, offsets: Offsets) -> None:
        """At start-up: a partition attached while capture was stopped (or in the last seconds
        before it stopped) is one the position does not record: snapshot it. Tables new in the
        pipeline are snapshotted whole (_follow_tables), so only tables the slot knew count."""
        if offsets.partitions is None or self._leaves is None:
            return  # a position written before partitions were recorded: nothing to compare with
        known_tables = set(offsets.tables or ())
        now = {t: leaves for t, leaves in self._leaves.items() if t in known_tables}
        known = {t: set(oids) for t, oids in offsets.partitions.items()}
        with source.pg_errors("cannot snapshot attached partitions", self.conns.postgres):
            self._snapshot_partitions(conn, now, known, " while capture was stopped")

    def _partitions_record(self) -> dict[str, tuple[int, ...]] | None:
        """The leaf partitions known now, as the position records them."""
        if self._leaves is None:
            return None
        return {t: tuple(sorted(oids)) for t, oids in sorted(self._leaves.items())}

    def _shape_for(self, rel: Relation, conn: psycopg.Connection) -> TableShape | OutboxShape | None:
        p = self.pipeline
        if rel.schema != p.schema:
            return None
        if p.outbox and rel.name == p.outbox.table:
            c = p.outbox.columns
            return OutboxShape(rel.name, c.event_name, c.event_type, c.entities)
        if rel.name not in p.tables:
            return None
        info = self._infos.get(rel.name)
        if info is not None and info.partitioned:
            self._check_partitions(rel.name, conn)
        known = {} if info is None else {c.name: c.type_oid for c in info.columns}
        oids = rel.type_oids or (0,) * len(rel.columns)  # none: a snapshot's shape
        if info is None or any(
            col not in info.generated if col not in known else (oid != 0 and known[col] != oid)
            for col, oid in zip(rel.columns, oids, strict=True)
        ):
            # the table changed since start (a column added, renamed or of another type): look
            # again (and refuse new unsupported columns)
            with source.pg_errors("cannot inspect a changed table", self.conns.postgres):
                self._infos.update(source.inspect_tables(conn, p.schema, [rel.name]))
                source.check_tables(p, self._infos)
            info = self._infos[rel.name]
        kinds = {c.name: c.kind or "plain" for c in info.columns}
        if rel.type_oids:  # the stream's own column types win: the catalog may be ahead of it
            kinds.update(self._stream_kinds(rel, info, conn))
        names = {op: p.event_name(rel.name, op) for op in ("INSERT", "UPDATE", "DELETE", "SNAPSHOT")}
        return TableShape(
            rel.name,
            p.entity_type(rel.name),
            source.id_columns(p, info),
            kinds,
            names,
            p.tables[rel.name].event_type,
            # generated columns: PostgreSQL 18 sends stored ones, earlier versions none; never captured
            frozenset(p.tables[rel.name].exclude_columns) | frozenset(info.generated),
        )

    def _stream_kinds(
        self, rel: Relation, info: source.TableInfo, conn: psycopg.Connection
    ) -> dict[str, Kind]:
        """Each column's kind from the type oids of its Relation message (an ALTER COLUMN TYPE
        while capture runs changes them), refusing a type capture cannot take."""
        missing = [oid for oid in set(rel.type_oids) if oid not in self._type_kinds]
        if missing:
            with source.pg_errors("cannot inspect a changed table", self.conns.postgres):
                self._type_kinds.update(source.type_kinds(conn, missing))
        skip = set(self.pipeline.tables[rel.name].exclude_columns) | set(info.generated)
        kinds: dict[str, Kind] = {}
        for col, oid in zip(rel.columns, rel.type_oids, strict=True):
            if oid not in self._type_kinds:  # dropped since: the catalog's view stands
                continue
            type_name, kind = self._type_kinds[oid]
            if kind is None and col not in skip:
                raise source.unsupported_column(rel.name, col, type_name)
            kinds[col] = kind or "plain"
        return kinds

    # --- run --------------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None, duration_s: float | None = None) -> CaptureStats:
        """Capture until ``stop`` is set (or ``duration_s`` passes). Returns what was done.

        Raises:
            CaptureError: a problem the user must fix (bad table, dropped slot, credentials...).
        """
        stop = stop or threading.Event()
        if duration_s is not None:
            timer = threading.Timer(duration_s, stop.set)
            timer.daemon = True
            timer.start()
        p, conns = self.pipeline, self.conns
        sql_conn = self._prepare_source()
        ensure_topics(conns, p.raw_topic)
        encoder = AvroEncoder(register_raw_schema(conns, p.raw_topic.name))
        if self.route_path is not None:
            from cdcrouter.route.fused import FusedRoutes

            self.routes = FusedRoutes(self.route_path, conns, p.raw_topic.name)
            self.routes.start()  # topics and filtered schemas checked before anything streams
        sink = self._make_sink()  # fences a zombie first
        try:
            self._start_position(sql_conn, sink, encoder)  # sets self.stats.last
            if self.routes is not None:
                self._warm_up(sink, stop)
            outage = Outage(self.reconnect_timeout_s)
            while not stop.is_set():
                stream = None
                try:
                    stream = source.ReplicationStream(conns.postgres)
                    self._check_history(stream)
                    stream.start(p.replication.slot, p.replication.publication, self.stats.last.end_lsn)
                    outage.streaming()
                    self.streaming.set()
                    self.metrics.health.set(True, f"streaming from slot {p.replication.slot}")
                    if not self.stats.last.snapshot:
                        self.ready.set()
                    gc.freeze()  # start-up objects leave the collector's view: no full-GC pauses in the loop
                    self._stream(stream, sink, encoder, sql_conn, self.stats.last, stop)
                except (
                    psycopg2.OperationalError,
                    psycopg2.InterfaceError,
                    psycopg2.DatabaseError,
                    psycopg.OperationalError,  # the snapshot reader's connection
                ) as exc:
                    sink.abort()  # the partial batch is replayed from `committed`
                    self.stats.reconnects += 1
                    if not outage.failed(self.stats.kafka_commits):
                        raise CaptureError(
                            f"lost the replication connection and could not reconnect: {exc}".strip(),
                            hint="check that PostgreSQL is up; a restart resumes from Kafka's position",
                        ) from exc
                    self.progress(f"replication connection lost ({str(exc).strip()}); reconnecting")
                    stop.wait(1.0)
                    sql_conn = self._reconnect_sql(sql_conn)
                    self._check_slot(sql_conn)
                except RecordsRejected as exc:  # never loops: each time the cap drops below a record
                    self.progress(f"{exc.message}; replaying the batch with them dead-lettered")
                    self.size_cap = exc.next_cap
                    sink.close()
                    sink = self._new_sink(outage.deadline, stop)
                except KafkaSinkError as exc:
                    self.stats.reconnects += 1
                    if not outage.failed(self.stats.kafka_commits):
                        raise
                    self.progress(f"Kafka failed ({exc.message}); starting a new producer")
                    sink.close()
                    stop.wait(1.0)
                    sink = self._new_sink(outage.deadline, stop)
                except CaptureError as exc:
                    if isinstance(exc.__cause__, psycopg2.OperationalError) and outage.failed(
                        self.stats.kafka_commits
                    ):
                        if "in use by another process" in exc.message:  # a second capture of this slot
                            self.progress(f"{exc.message}; waiting for it to stop ({exc.hint})")
                        else:
                            self.progress(f"PostgreSQL not reachable ({exc.message}); retrying")
                        sink.abort()
                        stop.wait(1.0)
                        # a failover: the SQL connection must follow the replication one to the new primary
                        sql_conn = self._reconnect_sql(sql_conn)
                        continue
                    if "does not exist" in exc.message:  # the slot: say why (a failover?) and what to do
                        sql_conn = self._reconnect_sql(sql_conn)
                        self._check_slot(sql_conn)
                    raise
                finally:
                    self.metrics.health.set(False, "not connected to the slot (reconnecting or stopping)")
                    if stream is not None:
                        stream.close()
            return self.stats
        finally:
            gc.unfreeze()  # a process that goes on (the demo, tests) collects normally again
            sink.close()
            sql_conn.close()
            if self.routes is not None:
                self.routes.close()

    def _warm_up(self, sink: TransactionalSink, stop: threading.Event) -> None:
        """Fused mode: commit the position already committed again, a few times, before streaming.

        A broker that has just started runs its first transactions several times slower than later
        ones (measured on a fresh stack: 277, 205, 102 ms for the first three over 15 partitions,
        18-32 ms after 55), and the first changes paid for that (the cold demo's tail). These
        transactions hold one record, the same position again, so a reader of the offsets topic
        sees nothing new; they stop once five in a row took under 15 ms (a warm broker: after
        five), after 60, or after 3 s."""
        started = time.monotonic()
        quick = count = 0
        while quick < 5 and count < 60 and time.monotonic() - started < 3.0 and not stop.is_set():
            began = time.monotonic()
            sink.begin()
            sink.commit(self.stats.last)
            count += 1
            quick = quick + 1 if time.monotonic() - began < 0.015 else 0
        log.info("warmed up with %d transactions in %.0f ms", count, (time.monotonic() - started) * 1000)

    def _make_sink(self) -> TransactionalSink:
        """Capture's transactional producer; in fused mode one that also routes each raw record."""
        p = self.pipeline
        timeout = p.transactions.capture_timeout_ms
        if self.routes is not None:
            from cdcrouter.capture.fused import FusedSink

            return FusedSink(
                self.conns, p.raw_topic, p.replication.slot, self.routes, size_cap=self.size_cap,
                transaction_timeout_ms=timeout,
            )  # fmt: skip
        slot = p.replication.slot
        return TransactionalSink(
            self.conns, p.raw_topic, slot, size_cap=self.size_cap, transaction_timeout_ms=timeout
        )

    def _check_history(self, stream: source.ReplicationStream) -> None:
        """After a promotion (a new timeline since the last connection): refuse to go on when the
        promoted server's history parts from the old primary's before what Kafka already holds.
        Its new changes would then reuse WAL positions capture has passed, and be skipped as
        already sent (capture/failover.py)."""
        timeline = stream.timeline()
        # at start-up: the timeline Kafka's position was written on (None in older records)
        known = self._timeline if self._timeline is not None else self.stats.last.timeline
        self._timeline = timeline
        if known is None or timeline == known:
            return
        fork = stream.switchpoint(timeline, known)
        if fork is not None and self.stats.last.end_lsn > fork:
            raise failover.forked_error(self.pipeline, self.stats.last, known, timeline, fork)
        self.progress(f"the server was promoted: timeline {known} -> {timeline} at {lsn_to_str(fork or 0)}")

    def _new_sink(self, deadline: float, stop: threading.Event) -> TransactionalSink:
        """A fresh producer (fencing the old one), then the position Kafka really committed."""
        p = self.pipeline
        while True:
            try:
                sink = self._make_sink()
                offsets = read_offsets(self.conns, p.raw_topic.offsets_topic, p.replication.slot)
            except KafkaFatal:
                raise
            except CaptureError:
                if time.monotonic() > deadline or stop.is_set():
                    raise
                stop.wait(2.0)
                continue
            if offsets is not None:
                self.stats.last = offsets
            self.progress(f"Kafka is back; resuming after {lsn_to_str(self.stats.last.end_lsn)}")
            return sink

    def _check_slot(self, conn: psycopg.Connection) -> None:
        """A dropped slot cannot come back: say so now instead of retrying for minutes."""
        slot = self.pipeline.replication.slot
        try:
            gone = not source.slot_exists(conn, slot)
        except psycopg.Error:
            return  # PostgreSQL is not answering yet: the reconnect loop finds out
        if gone and (failover.timeline(conn) or 1) > 1:  # promoted: the slot did not come along
            raise failover.slot_gone_error(conn, self.pipeline, self.stats.last)
        if gone:
            raise CaptureError(
                f"replication slot {slot} was dropped while capture was running; the changes "
                f"after {lsn_to_str(self.stats.last.end_lsn)} cannot be read any more",
                hint="start again with `cdcrouter capture run --resnapshot` (new slot and a fresh "
                "snapshot: existing rows are sent again as SNAPSHOT events)",
            )

    def _reconnect_sql(self, old: psycopg.Connection) -> psycopg.Connection:
        old.close()
        try:
            return source.connect_sql(self.conns.postgres)
        except CaptureError:
            return old  # retried on the next round

    def _start_position(self, conn: psycopg.Connection, sink: TransactionalSink, enc: AvroEncoder) -> Offsets:
        p = self.pipeline
        slot = p.replication.slot
        with source.pg_errors("cannot inspect replication slots", self.conns.postgres):
            has_slot = source.slot_exists(conn, slot)
        offsets = read_offsets(self.conns, p.raw_topic.offsets_topic, slot)
        prior = None
        if self.resnapshot:
            if has_slot:
                source.drop_slot(conn, slot)
            has_slot, prior, offsets = False, offsets, None
        if offsets is not None and (offsets.snapshot_done or offsets.end_lsn):
            if not has_slot:
                raise failover.slot_gone_error(conn, p, offsets)
            self._snapshot_attached(conn, offsets)
            offsets = self._follow_tables(conn, sink, offsets)
            pending = [s["table"] for s in offsets.snapshot]
            more = f"; snapshot pending for {', '.join(pending)}" if pending else ""
            self.progress(f"resuming slot {slot} after {lsn_to_str(offsets.end_lsn)}{more}")
            self.stats.last = offsets
            return offsets
        if has_slot:  # no position: recreate only a slot that never sent anything (slot_position.py)
            confirmed = slot_position.confirmed_lsn(conn, slot)
            records = 0 if self.from_slot else slot_position.raw_records(self.conns, p.raw_topic.name)
            if records:
                raise slot_position.unsent_changes_error(p, records, confirmed)
            # snapshot: never has no snapshot to stand in for the changes the slot holds: keep them
            if confirmed is not None and (self.from_slot or p.replication.snapshot == "never"):
                offsets = slot_position.position_at_slot(p, confirmed)
                sink.begin()
                sink.commit(offsets)
                self.progress(
                    f"slot {slot} has no position in Kafka: resuming it from {lsn_to_str(confirmed)}"
                )
                self.stats.last = offsets
                return offsets
            self.progress(
                f"slot {slot} has no position in Kafka and {p.raw_topic.name} is empty; recreating it"
            )
            source.drop_slot(conn, slot)
        started = self._snapshot(conn, sink, enc, offsets or prior)
        if prior is not None:
            self._report_bridge(conn, prior, started)
        return started

    def _report_bridge(self, conn: psycopg.Connection, prior: Offsets, started: Offsets) -> None:
        """After ``--resnapshot`` replaced a slot that Kafka had a position for: which window of
        changes the snapshot stands in for (capture/failover.py)."""
        window = failover.bridged_window(conn, self.pipeline, prior, started.end_lsn)
        if window is None:
            return
        if not started.snapshot:
            self._warn_once(
                f"nothing bridges the changes after {window.from_lsn} ({window.from_commit}) up to the "
                f"new slot's start {window.to_lsn}: replication.snapshot is never"
            )
            return
        self.bridged = window
        self.progress(window.describe())

    def _follow_tables(self, conn: psycopg.Connection, sink: TransactionalSink, offsets: Offsets) -> Offsets:
        """Tables added to the pipeline since the last run get a snapshot (``snapshot: initial``);
        removed ones leave the snapshot queue. Committed at once, so a table is queued once."""
        p = self.pipeline
        current = tuple(p.tables)
        if offsets.tables is None:  # a position written before tables were recorded
            return dataclasses.replace(offsets, tables=current)
        added = [t for t in current if t not in offsets.tables]
        queue = [s for s in offsets.snapshot if s["table"] in p.tables]
        if not added and len(queue) == len(offsets.snapshot) and set(offsets.tables) == set(current):
            return offsets
        if p.replication.snapshot == "initial":
            with source.pg_errors("cannot estimate the size of the new tables", self.conns.postgres):
                for table in added:
                    est = estimate_rows(conn, p.schema, table, p.tables[table].row_filter)
                    queue.append(TableSnapshot(table, "added", estimate=est).to_dict())
                    self.progress(f"table {table} is new in the pipeline: snapshot queued (~{est:,} rows)")
        offsets = dataclasses.replace(
            offsets, snapshot=tuple(queue), snapshot_done=not queue, tables=current, committed_at_ms=_now_ms()
        )
        sink.begin()
        sink.commit(offsets)
        return offsets

    def _snapshot(
        self, conn: psycopg.Connection, sink: TransactionalSink, enc: AvroEncoder, prior: Offsets | None
    ) -> Offsets:
        """Create the slot and, with ``snapshot: initial``, queue every table for a chunked
        snapshot that runs while streaming (capture/snapshot.py). The slot's start position and
        the queue are committed to Kafka at once."""
        p = self.pipeline
        stream = source.ReplicationStream(self.conns.postgres)
        try:
            # before the slot: the exported snapshot lasts only until this connection's next command
            self._timeline = stream.timeline()  # the slot's start position is on it
            point, exported = stream.create_slot_with_snapshot(
                p.replication.slot, failover=p.replication.failover
            )
            queue = []
            if p.replication.snapshot == "initial":  # while the slot's snapshot is still valid
                queue = [t.to_dict() for t in initial_queue(self.conns.postgres, p, exported)]
        finally:
            stream.close()
        now = _now_ms()
        total = prior.events_total if prior else 0
        offsets = Offsets(
            0,
            point,
            not queue,
            total,
            now,
            now,
            0.0,
            tuple(queue),
            tuple(p.tables),
            timeline=self._timeline,
            partitions=self._partitions_record(),
        )
        sink.begin()
        sink.commit(offsets)
        self.stats.last = offsets
        what = f"{len(queue)} tables queued (chunked, while streaming)" if queue else "none"
        self.progress(f"created slot {p.replication.slot} at {lsn_to_str(point)}; snapshot: {what}")
        return offsets

    def _table_shape(self, table: str, conn: psycopg.Connection) -> TableShape:
        p = self.pipeline
        info = self._infos[table]
        cols = [c.name for c in info.columns if c.name not in p.tables[table].exclude_columns]
        rel = Relation(0, p.schema, table, info.replica_identity, tuple(cols), (), ())
        shape = self._shape_for(rel, conn)
        assert isinstance(shape, TableShape)
        return shape

    def _stream(
        self,
        stream: source.ReplicationStream,
        sink: TransactionalSink,
        enc: AvroEncoder,
        sql_conn: psycopg.Connection,
        committed: Offsets,
        stop: threading.Event,
    ) -> Offsets:
        """Stream until stopped. Kafka commits run on a helper thread while the next batch is
        decoded (held in ``pending`` until the commit is done); the slot is acknowledged and
        ``stats.last`` moves only once a commit has succeeded."""
        p = self.pipeline
        cur = stream.cursor
        read = cur.read_message
        decoder = PgOutputDecoder()
        decode = decoder.decode
        shapes = self._shapes
        shapes.clear()
        encode = enc.encode
        produce = sink.produce_event
        produce_raw, raw_name = sink.produce, p.raw_topic.name
        rows: dict[int, RowEncoder] = {}  # relation oid -> fused decode/normalise/encode
        time_ns = time.time_ns
        saved_ms, saved = 0, encode_long(0)  # produce time in ms, and encoded
        ms = encode_long(0)  # the current PostgreSQL transaction's COMMIT time, encoded
        stats = self.stats
        max_events, max_s = p.batching.max_events, p.batching.max_ms / 1000
        max_open_s = p.batching.max_open_s
        heartbeat_s = p.heartbeat_interval_s

        in_txn = skip = split = False  # split: the current PostgreSQL txn was committed in part
        txn_final = through = 0  # its final LSN; a restart skips its changes up to `through`
        commit_ms = 0
        last_done: Commit | None = None  # last complete PostgreSQL txn of the batch being built
        batch_events = 0
        batch_start = time.monotonic()
        last_feedback = last_progress = last_published = time.monotonic()
        progress_events = stats.events
        acked = committed.end_lsn
        inflight: Future[None] | None = None
        inflight_offsets = committed
        pending: list[tuple[bytes, bytes, str | None, int]] = []  # key, value, topic, LSN
        dlq = p.raw_topic.dlq_topic
        pool = ThreadPoolExecutor(1, thread_name_prefix="cdcrouter-kafka-commit")
        commit_done = threading.Event()  # set when `inflight` finishes (cheaper than Future.done())
        # ... and a byte on this pipe, so a loop waiting in select() for PostgreSQL wakes at once
        # when a commit ends: the changes held in `pending` go out then, not up to 5 ms later
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)

        def committed_cb(_: object) -> None:
            commit_done.set()
            with contextlib.suppress(OSError):  # full (never read) or closed: the event still says it
                os.write(wake_w, b"c")

        change_tags = frozenset((_INSERT, _UPDATE, _DELETE))
        commit_took = self.metrics.commit_took
        snap = SnapshotRunner(
            self.conns.postgres,
            p,
            self._infos,
            lambda table: self._table_shape(table, sql_conn),
            encode,
            [TableSnapshot.from_dict(d) for d in committed.snapshot],
            self.progress,
        )
        tables = committed.tables if committed.tables is not None else tuple(p.tables)
        chunk_rows = p.replication.snapshot_chunk_size
        recent = snap.recent.append
        watch = snap.watch  # relation oids of the table whose chunk waits for its watermark
        draining, lsn = False, 0  # a chunk past its watermark, being sent; the watermark's LSN
        slice_rows, slice_s, slice_due = 1000, 0.02, 0.0  # ~15 ms of work, at least every 20 ms
        ready = self.ready
        beat = self.metrics.health.beat  # /readyz: a loop that stops turning is stalled

        gate = self._mirror_gate(committed)
        cap = gate.cap if gate is not None else (lambda lsn: lsn)

        def settle(block: bool) -> None:
            """Finish an in-flight commit: ack the slot, then open the next txn with `pending`."""
            nonlocal inflight, committed, acked, last_feedback
            if inflight is None or not (block or inflight.done()):
                return
            fut, inflight = inflight, None
            fut.result()  # raises CaptureError if the commit failed (nothing is acknowledged)
            committed = inflight_offsets
            stats.last = committed
            stats.kafka_commits += 1
            beat()
            stats.longest_txn_ms = max(stats.longest_txn_ms, sink.longest_s * 1000)
            if not committed.snapshot and not ready.is_set():
                ready.set()
            if gate is not None:
                gate.committed(committed.end_lsn)
            acked = cap(committed.end_lsn)  # with dr.confirm_after_mirror: what region B holds
            cur.send_feedback(write_lsn=committed.end_lsn, flush_lsn=acked, force=True)
            last_feedback = time.monotonic()
            if pending:
                sink.begin()
                for key, value, topic, lsn in pending:
                    if topic is None:
                        try:
                            produce_raw(raw_name, value, key)
                            continue
                        except (BufferError, KafkaException):
                            pass
                    if produce(key, value, topic, lsn):  # waits for room, or raises KafkaSinkError
                        stats.dead_letters += 1  # too large for the raw topic
                pending.clear()

        def emit(key: bytes, value: bytes, topic: str | None = None, lsn: int = 0) -> None:
            nonlocal batch_start
            if inflight is not None:
                pending.append((key, value, topic, lsn))
                if len(pending) >= max_events:
                    settle(True)
                return
            if not sink.in_transaction:
                sink.begin()
                batch_start = time.monotonic()
            if produce(key, value, topic, lsn):
                stats.dead_letters += 1

        def timed_commit(offsets: Offsets) -> None:
            started = time.perf_counter()
            sink.commit(offsets)
            commit_took(time.perf_counter() - started)

        def start_commit(part_through: int = 0) -> None:
            """Commit the batch; ``part_through``: the current PostgreSQL transaction's changes up to
            that LSN are in it, the rest follows (one too long for a Kafka transaction)."""
            nonlocal inflight, inflight_offsets, batch_events, last_done, batch_start
            settle(True)  # one commit at a time; flushes `pending` into the open txn
            sink.begin()  # snapshot progress alone may have produced nothing yet
            done = last_done
            state = snap.state()
            snap.dirty = False
            inflight_offsets = Offsets(
                done.commit_lsn if done else committed.commit_lsn,
                done.end_lsn if done else committed.end_lsn,
                not state,
                committed.events_total + batch_events,
                _now_ms(),
                done.commit_ms if done else committed.last_commit_ms,
                committed.rate,
                state,
                tables,
                txn_final if part_through else 0,
                part_through,
                self._timeline,
                self._partitions_record(),
            )
            commit_done.clear()
            inflight = pool.submit(timed_commit, inflight_offsets)
            inflight.add_done_callback(committed_cb)
            batch_events, last_done, batch_start = 0, None, time.monotonic()

        def split_txn(lsn: int) -> bool:
            """The open Kafka transaction has held one PostgreSQL transaction for ``max_open_s``:
            commit its changes so far (through ``lsn``), before the broker's transaction timeout
            aborts them all, again on every retry."""
            if not in_txn or inflight is not None or not sink.in_transaction:
                return False
            log.info("a PostgreSQL transaction open for %.0f s in Kafka: committing it in parts", max_open_s)
            start_commit(lsn)
            return True

        def next_chunk() -> None:
            """Between PostgreSQL transactions: read the next snapshot chunk (capture/snapshot.py)."""
            nonlocal watch
            if snap.next_chunk(chunk_rows):
                start_commit()  # a table finished without rows to wait for: commit the progress
                self._snapshot_report(snap)
            watch = snap.watch

        def drain() -> None:
            """Send a slice of the chunk past its watermark: whenever the stream is caught up, and
            every ``slice_s`` while it is not, so neither waits for the other."""
            nonlocal watch, draining, batch_events, slice_due
            out = snap.drain(slice_rows)
            slice_due = time.monotonic() + slice_s
            for key, value in out:
                emit(key, value, None, lsn)  # a dead letter names the chunk's watermark
            batch_events += len(out)
            stats.snapshot_events += len(out)
            if snap.chunk is None:  # sent: its progress commits now, or at its transaction's end
                draining, watch = False, snap.watch
                stats.snapshot_rows_superseded = snap.dropped
                if not in_txn:
                    start_commit()
                self._snapshot_report(snap)

        try:
            while not stop.is_set():
                if draining and time.monotonic() >= slice_due:  # the stream first, the chunk too
                    drain()
                if inflight is not None and commit_done.is_set():
                    settle(False)
                msg = read()
                if msg is None:
                    now = time.monotonic()
                    beat()
                    if not in_txn and last_done is not None:
                        start_commit()  # caught up: commit now for low latency
                    if not in_txn and snap.queue and snap.chunk is None:
                        next_chunk()
                    elif (
                        not in_txn
                        and inflight is None
                        and not sink.in_transaction
                        and now - last_feedback >= heartbeat_s
                    ):
                        wal_end = cur.wal_end
                        if gate is not None and not gate.all_mirrored():
                            wal_end = cap(wal_end)  # region B lacks committed changes: not past them
                        if wal_end > acked:  # idle: let the slot move on so it does not pin WAL
                            cur.send_feedback(write_lsn=wal_end, flush_lsn=wal_end, force=True)
                            acked = wal_end
                        last_feedback = now
                    if now - last_published >= PUBLICATION_CHECK_S:
                        last_published = now
                        try:
                            self._check_published(sql_conn)
                        except CaptureError as exc:  # a lost connection reconnects, as the stream's
                            if isinstance(exc.__cause__, psycopg.OperationalError):
                                raise exc.__cause__ from None
                            raise
                    if now - last_progress >= self.progress_interval_s:
                        committed = self._report(
                            committed, stats.events - progress_events, now - last_progress
                        )
                        if snap.queue:
                            self.progress(describe_snapshot(snap.progress()))
                        progress_events, last_progress = stats.events, now
                    if draining:  # caught up: send the chunk's next slice now
                        drain()
                        continue
                    busy = last_done is not None or inflight is not None
                    ready_fds = select.select([cur, wake_r], [], [], 0.005 if busy else 0.2)[0]
                    if wake_r in ready_fds:
                        with contextlib.suppress(OSError):
                            os.read(wake_r, 4096)
                    continue
                buf = msg.payload
                tag = buf[0]
                if tag in change_tags:
                    if skip or (through and msg.data_start <= through):
                        continue  # in Kafka already (a whole transaction, or part of one)
                    if watch and _U32(buf, 1)[0] in watch:
                        snap.saw(decode(buf))  # type: ignore[arg-type]
                    row_enc = rows.get(_U32(buf, 1)[0])
                    if row_enc is not None:  # a captured table: the fused hot path
                        now_ms = time_ns() // 1_000_000
                        if now_ms != saved_ms:
                            saved_ms, saved = now_ms, encode_long(now_ms)
                        try:
                            key, value = row_enc.encode(buf, msg.data_start, ms, saved)
                        except KeyMoved:  # a new entity id: DELETE + INSERT, through the generic path
                            row_enc = None
                    if row_enc is not None:
                        if inflight is None and sink.in_transaction:
                            try:
                                produce_raw(raw_name, value, key)
                            except (BufferError, KafkaException):  # full, too large, or failed
                                if produce(key, value, None, msg.data_start):
                                    stats.dead_letters += 1
                        else:
                            emit(key, value, None, msg.data_start)
                        batch_events += 1
                        stats.events += 1
                        if not batch_events & 255 and time.monotonic() - sink.began >= max_open_s:
                            split = split_txn(msg.data_start) or split
                        continue
                    ch = decode(buf)
                    assert isinstance(ch, Change)
                    rel = ch.relation
                    shape = shapes.get(rel.oid)
                    if shape is None:  # not in the pipeline: never skipped silently
                        stats.unknown_relation_changes += 1
                        self._warn_once(
                            f"the publication sends changes of {rel.schema}.{rel.name}, which the pipeline "
                            "does not capture: they are skipped and counted (unknown_relation_changes); "
                            "remove the table from the publication or add it to the pipeline"
                        )
                        continue
                    change = RowChange(
                        ch.operation, ch.new, ch.old, f"{msg.data_start:X}:{rel.name}", commit_ms
                    )
                    if type(shape) is TableShape:
                        if moved_key(change, shape):  # the old entity is gone, the new one complete
                            gone, change = split_moved_key(change)
                            gone_event = normalize_row(gone, shape, _now_ms())
                            emit(event_key(gone_event), encode(gone_event), None, msg.data_start)
                            batch_events += 1
                            stats.events += 1
                        event = normalize_row(change, shape, _now_ms())
                    elif ch.operation != "INSERT":
                        continue  # outbox rows are events once, when inserted
                    else:
                        try:
                            event = normalize_outbox(change, shape, _now_ms())  # type: ignore[arg-type]
                        except OutboxRowError as exc:
                            letter = {
                                "table": rel.name,
                                "position": change.position,
                                "error": str(exc),
                                "row": ch.new,
                            }
                            emit(b"", json.dumps(letter).encode(), dlq)
                            stats.dead_letters += 1
                            continue
                    emit(event_key(event), encode(event), None, msg.data_start)
                    batch_events += 1
                    stats.events += 1
                    if not batch_events & 255 and time.monotonic() - sink.began >= max_open_s:
                        split = split_txn(msg.data_start) or split
                elif tag == _BEGIN:
                    b = decode(buf)
                    assert isinstance(b, Begin)
                    in_txn, commit_ms = True, b.commit_ms
                    recent(b.xid)
                    ms = encode_long(commit_ms)
                    skip = b.final_lsn <= max(committed.commit_lsn, inflight_offsets.commit_lsn)
                    if skip:
                        stats.skipped_transactions += 1
                    txn_final, split = b.final_lsn, False
                    through = committed.partial_through if b.final_lsn == committed.partial_lsn else 0
                elif tag == _COMMIT:
                    c = decode(buf)
                    assert isinstance(c, Commit)
                    in_txn, through = False, 0
                    if skip:
                        skip = False
                        continue
                    stats.transactions += 1
                    # the batch being built is `pending` while a commit is in flight, else the
                    # open Kafka txn; a PostgreSQL txn without events (TRUNCATE, other tables)
                    # must not turn an in-flight or absent Kafka txn into one to commit, unless
                    # snapshot progress (a signal) has to be committed
                    # (a txn committed in part must also commit its end, even with nothing after the part)
                    if (pending if inflight is not None else sink.in_transaction) or snap.dirty or split:
                        last_done = c
                        if (
                            snap.dirty
                            or batch_events >= max_events
                            or time.monotonic() - batch_start >= max_s
                        ):
                            start_commit()
                    if snap.queue and snap.chunk is None:
                        next_chunk()
                elif tag == _MESSAGE:
                    m = decode(buf)
                    assert isinstance(m, LogicalMessage)
                    if m.prefix == WATERMARK_PREFIX and not m.transactional and snap.on_watermark(m):
                        draining, lsn = True, m.lsn  # the chunk's rows go out from here, in slices
                    elif m.prefix == SIGNAL_PREFIX and m.transactional and not skip and m.lsn > through:
                        snap.on_signal(m)  # queued; committed with its transaction
                elif tag == _RELATION:
                    rel = decode(buf)
                    assert isinstance(rel, Relation)
                    # (pgoutput also describes each partition whose changes it sends under the root:
                    # such a relation has no shape, and no changes of its own arrive)
                    shape = shapes[rel.oid] = self._shape_for(rel, sql_conn)
                    if type(shape) is TableShape:
                        snap.relation(shape.table, rel.oid)
                    if type(shape) is TableShape and fast_kind_ok(shape.kinds):
                        rows[rel.oid] = RowEncoder(rel, shape, enc.prefix)
                    else:
                        rows.pop(rel.oid, None)
                elif tag == _TRUNCATE:
                    t = decode(buf)
                    assert isinstance(t, Truncate)
                    names = [r.name for r in t.relations if shapes.get(r.oid) is not None]
                    if names:
                        self.progress(
                            f"TRUNCATE of {', '.join(names)} is not turned into events (see docs/capture.md)"
                        )
            # stopping: keep what is complete, drop a half-read PostgreSQL transaction
            settle(True)
            if last_done is not None and not in_txn:
                start_commit()
                settle(True)
        finally:
            if inflight is not None:  # an error elsewhere: still learn whether Kafka committed
                try:
                    inflight.result()
                    stats.last = inflight_offsets
                    stats.kafka_commits += 1
                except Exception:
                    log.warning("Kafka commit failed while stopping; resuming from %s", stats.last)
            pool.shutdown(wait=True)
            os.close(wake_r)
            os.close(wake_w)
            sink.abort()  # a half-read PostgreSQL transaction is replayed from the last commit
            snap.close()
            if gate is not None:
                gate.close()
        return stats.last

    def _mirror_gate(self, committed: Offsets) -> MirrorGate | None:
        """With ``dr.confirm_after_mirror``: the gate that holds the slot at what region B holds,
        told where this run starts (that position may not be mirrored yet either)."""
        dr = self.pipeline.dr
        if not dr.confirm_after_mirror:
            return None
        from cdcrouter.dr.confirm import MirrorGate
        from cdcrouter.dr.regions import region_kafka

        raw = self.pipeline.raw_topic
        gate = MirrorGate(
            self.conns.kafka,
            region_kafka(dr.region),
            (raw.name, raw.offsets_topic),
            source_alias=dr.source_alias,
        )
        gate.committed(committed.end_lsn)
        return gate.start()

    def _report(self, committed: Offsets, events: int, seconds: float) -> Offsets:
        rate = events / seconds if seconds > 0 else 0.0
        lag = max(0, _now_ms() - committed.last_commit_ms) if events else 0
        self.progress(
            f"captured {self.stats.events} events ({rate:,.0f}/s), committed up to "
            f"{lsn_to_str(committed.end_lsn)}, {self.stats.kafka_commits} Kafka txns, lag {lag} ms, "
            f"longest Kafka txn {self.stats.longest_txn_ms:,.0f} ms"
        )
        return dataclasses.replace(committed, rate=rate)

    def _snapshot_report(self, snap: SnapshotRunner) -> None:
        """After a chunk: the metrics' gauges and the CLI's progress bar."""
        pr = snap.progress()
        for done in snap.finished:
            self.metrics.snapshot_progress(done.table, done.rows, done.estimate, done=True)
        snap.finished.clear()
        if pr is not None:
            self.metrics.snapshot_progress(pr.table, pr.rows, pr.estimate)
        if self.snapshot_progress is not None:
            self.snapshot_progress(pr)
