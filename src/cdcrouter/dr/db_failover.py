"""Drill scenario "the primary database killed": kill -9 the primary under a steady workload,
promote the standby, and count what capture lost or doubled.

The scenario runs on a PostgreSQL of its own (a private primary and :class:`Standby` in a scratch
state dir, so the shared stack's server is never killed) and the given Kafka and registry.
Capture connects to both servers (libpq's multi-host form, ``target_session_attrs=primary``) and
follows the promotion on its own. The oracle is PostgreSQL's, not capture's: the ids whose
INSERT the server acknowledged, and the rows the new primary holds, against the entity ids and
uuids read back from the raw topic (read_committed).

On PostgreSQL 17+ the slot is a failover slot, so capture resumes from the standby's synchronised
copy. On 15-16 the slot is gone after promotion: capture stops with the guided error, and the
scenario runs the ``--resnapshot`` it names, which sends every row again as a SNAPSHOT event and
reports the window it bridged.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import fastavro
import psycopg

from cdcrouter.config import Connections
from cdcrouter.dr.standby import Standby, kill_primary
from cdcrouter.errors import CaptureError, StackError

Say = Callable[[str], None]
TABLE = "dr_orders"


@dataclass
class DbFailoverResult:
    """What the drill measured. ``lost`` and ``duplicates`` are the RPO; 0 and 0 is the promise."""

    pg_version: str
    slot_kept: bool  # the slot survived the promotion (17+ failover slot)
    acknowledged: int  # INSERTs the server acknowledged (before and after the failover)
    acknowledged_after_kill: int  # of those, by the promoted standby
    in_doubt: int  # INSERTs whose COMMIT got no answer (the primary died under them)
    rows_on_new_primary: int
    events: int  # change events of the table in the raw topic (INSERT + SNAPSHOT)
    lost: int  # acknowledged, or on the new primary, but in no event
    duplicates: int  # events whose uuid was seen before
    resent_by_snapshot: int  # ids sent twice: streamed, then again as SNAPSHOT (15-16 bridge only)
    lost_by_database: int  # acknowledged by the old primary, missing on the new one
    kill_to_promoted_s: float  # the failover: kill -9 until the standby accepted writes
    promote_s: float  # pg_promote() alone
    rto_s: float  # kill -9 until the first change committed after it was readable in Kafka
    capture_reconnects: int
    bridged: dict[str, Any] | None = None  # the window a re-snapshot stood in for (15-16)
    capture_error: str | None = None  # what capture said when the slot was gone (15-16)
    capture_hint: str | None = None  # and what it told the operator to do
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)
    lost_ids: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicates == 0 and self.lost_by_database == 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def describe(self) -> str:
        lines = [
            f"scenario db-primary (PostgreSQL {self.pg_version}): primary killed (kill -9), standby promoted",
            f"  RPO: {self.lost} committed changes lost, {self.duplicates} duplicate events (by uuid)"
            + (
                f", {self.resent_by_snapshot} rows re-sent by the snapshot" if self.resent_by_snapshot else ""
            ),
            f"  RTO: {self.rto_s:.1f} s from kill -9 until new changes were readable in Kafka",
            f"  failover: {self.kill_to_promoted_s:.1f} s from kill -9 to a writable primary "
            f"(pg_promote {self.promote_s:.2f} s)",
            f"  workload: {self.acknowledged} INSERTs acknowledged, {self.in_doubt} in doubt at the kill, "
            f"{self.rows_on_new_primary} rows on the new primary, {self.events} events; "
            f"{self.lost_by_database} acknowledged rows missing on the new primary",
            "  slot: "
            + (
                "kept (failover slot, synchronised to the standby)"
                if self.slot_kept
                else "lost at promotion; gap closed by --resnapshot"
            ),
        ]
        if self.bridged:
            lines.append(
                f"  bridged: {self.bridged['from_lsn']} ({self.bridged['from_commit']}) -> "
                f"{self.bridged['to_lsn']} ({self.bridged['to_time']}) by a snapshot of "
                f"{', '.join(self.bridged['tables'])}"
            )
        la = self.load_average
        lines.append(f"  load average during the drill: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
        lines.append("  result: " + ("PASS" if self.ok else f"FAIL (lost ids: {self.lost_ids[:20]})"))
        return "\n".join(lines)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def primary_and_standby(pg_version: str, say: Say) -> Iterator[Standby]:
    """A private primary of ``pg_version`` and its standby in a scratch dir; both stopped by PID
    and deleted afterwards."""
    from cdcrouter.stack.manager import Stack

    scratch = Path(tempfile.mkdtemp(prefix="cdcrouter-dr-db-"))
    stack = Stack(scratch / "state", ports={"postgres": _free_port()}, pg_version=pg_version)
    standby = Standby(stack, port=_free_port())
    try:
        stack.up(["postgres"])
        say(f"primary PostgreSQL {pg_version} on port {stack.ctx.port('postgres')}")
        standby.up()
        standby.wait_streaming()
        say(f"standby streaming (synchronous) on port {standby.port}")
        yield standby
    finally:
        with contextlib.suppress(Exception):
            standby.down(purge=True)
        with contextlib.suppress(Exception):
            stack.down(["postgres"], purge=True)
        shutil.rmtree(scratch, ignore_errors=True)


class _Writer:
    """One INSERT per transaction at ``rate`` per second through the multi-host DSN, recording
    which ids the server acknowledged (and when) and which COMMITs got no answer."""

    def __init__(self, dsn: str, schema: str, rate: float) -> None:
        self.dsn, self.schema, self.pause = dsn, schema, 1.0 / rate
        self.acked: dict[int, float] = {}
        self.in_doubt: set[int] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="dr-writer", daemon=True)

    def _run(self) -> None:
        next_id, conn = 1, None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
                conn.execute(
                    f'INSERT INTO "{self.schema}".{TABLE} (id, note) VALUES (%s, %s)', (next_id, "x")
                )
                self.acked[next_id] = time.monotonic()
            except psycopg.Error:
                self.in_doubt.add(next_id)  # sent, no answer: the row may or may not exist
                with contextlib.suppress(Exception):
                    conn.close()  # type: ignore[union-attr]
                conn = None
                self.stop.wait(0.2)
            next_id += 1
            self.stop.wait(self.pause)
        if conn is not None:
            conn.close()


class _RawReader:
    """Reads the raw topic (read_committed) in the background: per event its uuid, entity id and
    operation, and when each id was first seen."""

    def __init__(self, conns: Connections, topic: str) -> None:
        from cdcrouter.schemas.registry import RegistryClient

        self.conns, self.topic = conns, topic
        self.registry = RegistryClient(conns.registry.to_client_conf())
        self.schemas: dict[int, Any] = {}
        self.events: list[tuple[str, int, str]] = []  # uuid, id, operation
        self.first_seen: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="dr-reader", daemon=True)

    def _decode(self, value: bytes) -> dict[str, Any]:
        schema_id = int.from_bytes(value[1:5], "big")
        if schema_id not in self.schemas:
            text = self.registry.schema_by_id(schema_id)
            self.schemas[schema_id] = fastavro.parse_schema(json.loads(text or "null"))
        return fastavro.schemaless_reader(io.BytesIO(value[5:]), self.schemas[schema_id], None)  # type: ignore[return-value]

    def _run(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(
            {
                **self.conns.kafka.to_librdkafka(),
                "group.id": f"dr-drill-{uuid.uuid4().hex[:8]}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        try:
            consumer.assign([TopicPartition(self.topic, 0, 0)])
            while not self.stop.is_set():
                for m in consumer.consume(1000, 0.1):
                    if m.error():
                        continue
                    event = self._decode(m.value())
                    entity_id = int(event["eventBody"]["entities"][0]["entityId"])
                    self.events.append(
                        (event["eventHeader"]["uuid"], entity_id, event["sourceMetadata"]["operation"])
                    )
                    self.first_seen.setdefault(entity_id, time.monotonic())
        finally:
            consumer.close()

    def wait_for(self, ids: set[int], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ids <= self.first_seen.keys():
                return True
            time.sleep(0.1)
        return ids <= self.first_seen.keys()


class _Capture:
    """The embedded capture engine in a thread, as ``capture run`` runs it."""

    def __init__(self, pipeline: Any, conns: Connections, say: Say, *, resnapshot: bool = False) -> None:
        from cdcrouter.capture import CaptureEngine

        self.engine = CaptureEngine(pipeline, conns, progress=say, resnapshot=resnapshot)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="dr-capture", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.engine.run(self.stop)
        except BaseException as exc:  # reported by the scenario
            self.error = exc

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.engine.ready.wait(0.2):
            if self.error or time.monotonic() > deadline:
                raise self.error or StackError("capture did not start streaming within 60 s")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)


def run_db_failover(
    conns: Connections,
    *,
    pg_version: str = "18",
    rate: float = 50.0,
    before_s: float = 2.0,
    after_s: float = 3.0,
    say: Say | None = None,
) -> DbFailoverResult:
    """Run the scenario; ``conns`` gives Kafka and the registry (its PostgreSQL is not used)."""
    from cdcrouter.capture import pipeline_from_dict
    from cdcrouter.topics import delete_topics

    say = say or (lambda _m: None)
    name = f"dr_{uuid.uuid4().hex[:8]}"
    failover_slots = int(pg_version) >= 17
    pipeline = pipeline_from_dict(
        {
            "schema": name,
            "raw_topic": {"name": f"raw-dr-db-{name}", "partitions": 1},
            "replication": {"slot": name, "publication": name, "failover": failover_slots},
            "batching": {"max_ms": 20},
            "tables": {TABLE: {"entity_type": "Order"}},
        },
        source="pipeline.yaml",
    )
    raw = pipeline.raw_topic
    captures: list[_Capture] = []
    threads: list[_Writer | _RawReader] = []
    try:
        with primary_and_standby(pg_version, say) as standby:
            pg = standby.failover_settings()
            cap_conns = conns.model_copy(update={"postgres": pg})
            with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{name}"')
                conn.execute(f'CREATE TABLE "{name}".{TABLE} (id bigint PRIMARY KEY, note text)')
            captures.append(_Capture(pipeline, cap_conns, say))
            captures[0].wait_ready()
            reader = _RawReader(cap_conns, raw.name)
            writer = _Writer(pg.conninfo(), name, rate)
            threads += [reader, writer]
            reader.thread.start()
            writer.thread.start()
            if failover_slots:
                state = standby.wait_slot_synced(pipeline.replication.slot, timeout_s=90)
                say(f"the standby holds a synchronised copy of slot {name} at {state['confirmed_flush']}")
            time.sleep(before_s)
            load = os.getloadavg()
            t_kill = time.monotonic()
            pid = kill_primary(standby.stack)
            t_killed = time.monotonic()  # every acknowledgement from now on is the new primary's
            say(f"killed the primary (kill -9, pid {pid})")
            promote_s = standby.promote()
            kill_to_promoted = time.monotonic() - t_kill
            say(f"promoted the standby in {promote_s:.2f} s ({kill_to_promoted:.2f} s after the kill)")
            error = bridged = None
            if not failover_slots:  # the slot is gone: capture stops with the guided error
                captures[0].thread.join(180)
                error = captures[0].error
                if not isinstance(error, CaptureError):
                    raise StackError(f"capture did not stop on the lost slot as expected ({error!r})")
                say(f"capture stopped: {error.message}")
                captures.append(_Capture(pipeline, cap_conns, say, resnapshot=True))
                captures[1].wait_ready(120)
                window = captures[1].engine.bridged
                bridged = window.to_dict() if window else None
            time.sleep(after_s)
            writer.stop.set()
            writer.thread.join(30)
            with psycopg.connect(pg.conninfo()) as conn:
                rows = {r[0] for r in conn.execute(f'SELECT id FROM "{name}".{TABLE}')}
            reader.wait_for(rows | set(writer.acked), timeout_s=90)
            for cap in captures:
                cap.close()
            time.sleep(0.5)  # the last polls
            reader.stop.set()
            reader.thread.join(30)
            running = captures[-1]
            if running.error:
                raise running.error
            seen_ids = [i for _u, i, _op in reader.events]
            uuids = [u for u, _i, _op in reader.events]
            expected = rows | set(writer.acked)
            lost_ids = sorted(expected - set(seen_ids))
            acked_after = [i for i, t in writer.acked.items() if t > t_killed]
            after = [reader.first_seen[i] for i in acked_after if i in reader.first_seen]
            return DbFailoverResult(
                pg_version=pg_version,
                slot_kept=failover_slots and error is None,
                acknowledged=len(writer.acked),
                acknowledged_after_kill=len(acked_after),
                in_doubt=len(writer.in_doubt),
                rows_on_new_primary=len(rows),
                events=len(reader.events),
                lost=len(lost_ids),
                duplicates=len(uuids) - len(set(uuids)),
                resent_by_snapshot=len(seen_ids) - len(set(seen_ids)) - (len(uuids) - len(set(uuids))),
                lost_by_database=len(set(writer.acked) - rows),
                kill_to_promoted_s=round(kill_to_promoted, 2),
                promote_s=round(promote_s, 2),
                rto_s=round(min(after) - t_kill, 2) if after else float("nan"),
                capture_reconnects=sum(c.engine.stats.reconnects for c in captures),
                bridged=bridged,
                capture_error=error.message if error else None,
                capture_hint=error.hint if error else None,
                load_average=(round(load[0], 2), round(load[1], 2), round(load[2], 2)),
                lost_ids=lost_ids[:100],
            )
    finally:
        for worker in threads:
            worker.stop.set()
        for cap in captures:
            cap.close()
        with contextlib.suppress(Exception):
            delete_topics(conns, [raw.name, raw.offsets_topic, raw.dlq_topic])
