"""``cdcrouter bench snapshot``: a large table snapshotted while changes stream into another.

1. ``snap_rows`` gets N rows (before capture's slot exists, so they are snapshot rows only);
   the sample ``loan_entities`` is the streamed table.
2. ``capture run`` runs as a subprocess (``snapshot: initial``, chunks of ``chunk`` rows); once
   it streams (its slot active), ``rate`` INSERTs/s go into ``loan_entities`` (10 rows per
   transaction).
3. A read_committed consumer counts every snapshot row per id (exactly once?), notes when the
   first one is readable, and per streamed change the latency commit (``createdDate``) ->
   readable.
4. With ``kill_at`` (a fraction), the capture is killed with SIGKILL once that share of the rows
   is readable and started again at once: rows sent twice are counted, and the streamed changes
   committed while no capture ran are reported apart ("restart window").

Also measured: the capture processes' peak RSS (VmHWM) and their longest Kafka transaction (from
their log lines).
"""

from __future__ import annotations

import contextlib
import io
import re
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
import psycopg
from confluent_kafka import Consumer, TopicPartition

from cdcrouter.bench.capture import _spawn, _stop, _write
from cdcrouter.bench.stats import peak_rss_mb, percentile, wait_for_all
from cdcrouter.capture import source
from cdcrouter.capture.domain import apply_domain
from cdcrouter.capture.pipeline import pipeline_from_dict
from cdcrouter.capture.sink import AvroEncoder, ensure_topics
from cdcrouter.config.connections import Connections
from cdcrouter.topics import delete_topics

_LONGEST = re.compile(rb"longest Kafka (?:txn|transaction) ([\d,]+) ms")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class _Reader(threading.Thread):
    """Counts snapshot rows per id and measures streamed changes' latency (read_committed)."""

    def __init__(self, conns: Connections, topic: str, rows: int) -> None:
        super().__init__(daemon=True)
        self.seen = bytearray(rows + 1)  # times each id was received (capped at 255)
        self.snapshot_rows = 0
        self.first_snapshot_at: float | None = None
        self.last_snapshot_at: float | None = None
        self.latencies: list[tuple[float, float]] = []  # (commit time s, latency ms)
        self.streamed = 0
        self.received_at: list[float] = []  # receive times after a kill (restart window end)
        self.stop = threading.Event()
        self.schema = AvroEncoder(0).schema
        self.consumer = Consumer(
            {
                **conns.kafka.to_librdkafka(),
                "group.id": f"bench-snapshot-{uuid.uuid4().hex[:8]}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        meta = self.consumer.list_topics(topic, timeout=10).topics[topic]
        self.consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])

    def run(self) -> None:
        seen, schema = self.seen, self.schema
        try:
            while not self.stop.is_set():
                msgs = self.consumer.consume(10_000, 0.005)
                now = time.time()
                for m in msgs:
                    if m.error():
                        continue
                    key = m.key()
                    if key[:1] == b"L":  # a streamed loan
                        event = fastavro.schemaless_reader(io.BytesIO(m.value()[5:]), schema, None)
                        created = event["eventHeader"]["createdDate"] / 1000  # type: ignore[index,call-overload]
                        self.latencies.append((created, (now - created) * 1000))
                        self.streamed += 1
                        continue
                    i = int(key)
                    if seen[i] < 255:
                        seen[i] += 1
                    self.snapshot_rows += 1
                    if self.first_snapshot_at is None:
                        self.first_snapshot_at = now
                    self.last_snapshot_at = now
                if msgs:
                    self.received_at.append(now)
                    if len(self.received_at) > 100_000:
                        del self.received_at[:50_000]
        finally:
            self.consumer.close()


def run_snapshot_bench(
    conns: Connections,
    *,
    rows: int = 5_000_000,
    rate: int = 1000,
    chunk: int = 10_000,
    kill_at: float | None = 0.5,
    report: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the benchmark on the stack ``conns`` points at; returns the numbers (see module doc)."""
    run_id = uuid.uuid4().hex[:8]
    schema, name, topic = f"bench_snap_{run_id}", f"bench_snap_{run_id}", f"bench-snap-{run_id}"
    apply_domain(conns.postgres.conninfo(), schema)
    opts = f"-c search_path={schema}"
    with psycopg.connect(conns.postgres.conninfo(), autocommit=True, options=opts) as conn:
        conn.execute(
            "CREATE TABLE snap_rows (id bigint PRIMARY KEY, name text NOT NULL, amount numeric(12, 2), "
            "created_at timestamptz NOT NULL DEFAULT now())"
        )
        t0 = time.monotonic()
        step = 500_000
        for lo in range(1, rows + 1, step):
            hi = min(rows, lo + step - 1)
            conn.execute(
                "INSERT INTO snap_rows (id, name, amount) "
                "SELECT g, 'row ' || g, (g %% 100000) / 100.0 FROM generate_series(%s::bigint, %s) g",
                (lo, hi),
            )
        conn.execute("ANALYZE snap_rows")
        report(f"{rows:,} rows in snap_rows in {time.monotonic() - t0:,.0f} s")
    pipeline = pipeline_from_dict(
        {
            "schema": schema,
            "raw_topic": {"name": topic, "partitions": 3},
            "replication": {
                "slot": name,
                "publication": f"{name}_pub",
                "snapshot": "initial",
                "snapshot_chunk_size": chunk,
            },
            "tables": {"snap_rows": {"entity_type": "Row"}, "loan_entities": {"entity_type": "Loan"}},
        }
    )
    work = Path(tempfile.mkdtemp(prefix="cdcrouter-bench-snapshot-"))
    pfile, log = _write(pipeline, work / "pipeline.yaml"), work / "capture.log"
    ensure_topics(conns, pipeline.raw_topic)
    reader = _Reader(conns, topic, rows)
    reader.start()

    writer_stop = threading.Event()
    written = [0]

    def write() -> None:
        with psycopg.connect(conns.postgres.conninfo(), options=opts) as wconn:
            start = time.monotonic()
            while not writer_stop.is_set():
                n = written[0]
                with wconn.transaction():
                    wconn.cursor().executemany(
                        "INSERT INTO loan_entities (id, customer_name) VALUES (%s, 'bench')",
                        [(f"L{i}",) for i in range(n, n + 10)],
                    )
                written[0] = n + 10
                ahead = start + written[0] / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)

    procs: list[Any] = []
    peak = [0.0]

    def sample_rss() -> None:
        while not writer_stop.is_set():
            for p in procs:
                peak[0] = max(peak[0], peak_rss_mb(p.pid) or 0.0)
            time.sleep(0.2)

    started = time.time()
    procs.append(_spawn(["capture", "run", "--pipeline", str(pfile)], log))
    rss = threading.Thread(target=sample_rss, daemon=True)
    rss.start()
    writer = threading.Thread(target=write, daemon=True)
    slot_conn = source.connect_sql(conns.postgres)
    kill: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 60
        active = "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s AND active"
        while slot_conn.execute(active, (name,)).fetchone() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the writer starts once capture streams
        writer.start()
        next_report = time.monotonic() + 10
        deadline = time.monotonic() + max(600, rows / 2000)
        while time.monotonic() < deadline:
            if procs[-1].poll() is not None:
                raise RuntimeError(f"capture exited: {log.read_text()[-2000:]}")
            if reader.snapshot_rows >= rows and reader.seen.count(0) == 1:  # every id seen (0 is unused)
                break
            if kill_at is not None and not kill and reader.snapshot_rows >= rows * kill_at:
                procs[-1].send_signal(signal.SIGKILL)
                procs[-1].wait(30)
                kill["at"] = time.time()
                kill["rows"] = reader.snapshot_rows
                procs.append(_spawn(["capture", "run", "--pipeline", str(pfile)], log))
                report(f"killed capture (SIGKILL) at {kill['rows']:,} snapshot rows; started it again")
            if time.monotonic() >= next_report:
                report(
                    f"{reader.snapshot_rows:,} snapshot rows, {reader.streamed:,} streamed changes readable"
                )
                next_report += 10
            time.sleep(0.2)
        else:
            raise RuntimeError(f"the snapshot did not finish in time ({reader.snapshot_rows:,} rows)")
        snapshot_done = time.time()
        writer_stop.set()
        writer.join(30)
        wait_for_all("snapshot bench, streamed changes", lambda: reader.streamed, written[0], 60)
        _stop(procs[-1])
    finally:
        writer_stop.set()
        for p in procs:
            with contextlib.suppress(Exception):
                p.kill()
        reader.stop.set()
        reader.join(30)
        with contextlib.suppress(Exception):
            source.drop_slot(slot_conn, name)
            source.drop_publication(slot_conn, f"{name}_pub")
            slot_conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        slot_conn.close()
        raw = pipeline.raw_topic
        delete_topics(conns, [raw.name, raw.offsets_topic, raw.dlq_topic])  # millions of records

    counts = reader.seen[1:]
    resent = sum(c - 1 for c in counts if c > 1)
    missing = counts.count(0)
    window_end = next((t for t in reader.received_at if t > kill["at"]), kill["at"]) if kill else 0.0

    def in_window(created: float) -> bool:  # committed while no capture was running
        return bool(kill) and kill["at"] - 1 <= created <= window_end

    normal = [(lat, c) for c, lat in reader.latencies if not in_window(c)]
    during = [lat for c, lat in reader.latencies if in_window(c)]
    worst = sorted(normal, reverse=True)[:5]
    longest = max((int(m.replace(b",", b"")) for m in _LONGEST.findall(log.read_bytes())), default=0)
    snapshot_s = (reader.last_snapshot_at or snapshot_done) - started
    restart_s = (window_end - kill["at"]) if kill else 0.0
    return {
        "rows": rows,
        "chunk": chunk,
        "rate_target": rate,
        "streamed_changes": reader.streamed,
        "streamed_written": written[0],
        "first_snapshot_row_s": round((reader.first_snapshot_at or 0) - started, 2),
        "snapshot_s": round(snapshot_s, 1),
        "snapshot_rows_per_s": round(rows / (snapshot_s - restart_s)),
        "snapshot_rows_per_s_wall": round(rows / snapshot_s),
        "exactly_once": resent == 0 and missing == 0,
        "rows_resent": resent,
        "rows_missing": missing,
        "killed_at_rows": kill.get("rows"),
        "restart_window_s": round(restart_s, 2),
        "latency_p50_ms": _round(percentile([lat for lat, _ in normal], 50)),
        "latency_p99_ms": _round(percentile([lat for lat, _ in normal], 99)),
        "latency_max_ms": round(worst[0][0] if worst else float("nan"), 1),
        "latency_over_1s": sum(1 for lat, _ in normal if lat > 1000),
        "latency_worst_at_s": [round(c - started, 1) for _, c in worst],
        "latency_restart_window_max_ms": round(max(during, default=0.0), 1),
        "peak_rss_mb": peak[0],
        "longest_kafka_txn_ms": longest,
        "log": str(log),
    }
