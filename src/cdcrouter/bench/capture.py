"""``cdcrouter bench capture``: the embedded engine and Debezium side by side, same machine and data.

1. Throughput: N changes (half INSERTs, half UPDATEs of ``car_entities``, 1,000 rows per
   transaction) are committed while both engines are held back (embedded stopped, Debezium's
   connector paused); then each drains that backlog alone. Rate = N / (time from release (the
   embedded engine's slot turning active; the connector's resume) to the last change readable,
   read_committed, on its raw topic).
2. Latency: both engines run live while ``rate`` changes/s are committed (20-row transactions);
   per change, latency = time a read_committed consumer receives it - its COMMIT time
   (``createdDate``). p50/p99 per engine.

Each engine runs in its own process (embedded: ``capture run``; Debezium: Kafka Connect plus
``capture normalize``), so the measuring process does not share a GIL with either.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
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

from cdcrouter.bench.stats import peak_rss_mb, percentile, reset_peak_rss, wait_for_all
from cdcrouter.capture import debezium, source
from cdcrouter.capture.domain import apply_domain
from cdcrouter.capture.pipeline import Pipeline, pipeline_from_dict
from cdcrouter.capture.sink import AvroEncoder
from cdcrouter.config.connections import Connections
from cdcrouter.errors import CaptureError

ROWS_PER_TXN = 1000


def _pipeline(schema: str, name: str, topic: str) -> Pipeline:
    return pipeline_from_dict(
        {
            "schema": schema,
            "raw_topic": {"name": topic, "partitions": 3},
            "replication": {"slot": name, "publication": f"{name}_pub", "snapshot": "never"},
            "batching": {"max_events": 20000, "max_ms": 50},
            "tables": {"car_entities": {"entity_type": "Car"}},
        }
    )


def _write(p: Pipeline, path: Path) -> Path:
    from ruamel.yaml import YAML

    YAML().dump(p.model_dump(by_alias=True, exclude={"source_file", "connections"}, exclude_none=True), path)
    return path


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cdcrouter.cli.main", *args],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        env=os.environ.copy(),
    )


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_slot(conns: Connections, slot: str, active: bool, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(conns.postgres.conninfo(), autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
            if row is not None and bool(row[0]) == active:
                return
            time.sleep(0.1)
    raise CaptureError(f"slot {slot} did not become {'active' if active else 'idle'}", hint="see the logs")


class _Watcher:
    """Reads a raw topic from its current end (read_committed) and timestamps every record."""

    def __init__(self, conns: Connections, topic: str, decode: bool) -> None:
        self.consumer = Consumer(
            {
                **conns.kafka.to_librdkafka(),
                "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
                "log_level": 0,  # a measuring consumer: the bench reports what went wrong
            }
        )
        meta = self.consumer.list_topics(topic, timeout=10).topics[topic]
        parts = []
        for p in meta.partitions:
            _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            parts.append(TopicPartition(topic, p, high))
        self.consumer.assign(parts)
        self.decode = decode
        self.schema = AvroEncoder(0).schema
        self.count = 0
        self.first = self.last = 0.0
        self.latencies_ms: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            # consume() returns when it has 10,000 records or when the timeout is up, and every
            # record is timestamped at its return: a long timeout would add up to that much to
            # each measured latency (at 2,000/s a 50 ms timeout added 0-50 ms, ~25 ms on average).
            msgs = self.consumer.consume(10_000, 0.002)
            now = time.time()
            for m in msgs:
                if m.error():
                    continue
                self.count += 1
                if self.decode:
                    ev = fastavro.schemaless_reader(io.BytesIO(m.value()[5:]), self.schema)
                    self.latencies_ms.append(now * 1000 - ev["eventHeader"]["createdDate"])  # type: ignore[index]
            if msgs:
                self.first = self.first or now
                self.last = now
        self.consumer.close()

    def wait_for(self, n: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.count < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.count >= n

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def _generate_backlog(conns: Connections, schema: str, n: int) -> None:
    half = n // 2
    with psycopg.connect(conns.postgres.conninfo(), options=f"-c search_path={schema}") as conn:
        for a in range(0, half, ROWS_PER_TXN):
            b = min(a + ROWS_PER_TXN, half) - 1
            conn.execute(
                "INSERT INTO car_entities (id, vin, make, model, model_year, price, color, created_at, "
                "updated_at) SELECT 'C' || g, 'VIN' || g, 'Volvo', 'XC40', 2020, 41999.90, 'red', now(), "
                f"now() FROM generate_series({a}, {b}) g"
            )
            conn.commit()
        for a in range(0, n - half, ROWS_PER_TXN):
            b = min(a + ROWS_PER_TXN, n - half) - 1
            conn.execute(
                "UPDATE car_entities SET price = price + 1, updated_at = now() "
                f"WHERE id IN (SELECT 'C' || g FROM generate_series({a}, {b}) g)"
            )
            conn.commit()


def _generate_at_rate(conns: Connections, schema: str, rate: int, seconds: float) -> int:
    per_txn = 20
    txns_per_s = max(1, rate // per_txn)
    sent = 0
    with psycopg.connect(conns.postgres.conninfo(), options=f"-c search_path={schema}") as conn:
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < seconds:
            conn.execute(
                "INSERT INTO car_entities (id, vin, make, model, created_at, updated_at) "
                f"SELECT 'R{i}-' || g, 'V', 'M', 'X', now(), now() FROM generate_series(1, {per_txn}) g"
            )
            conn.commit()
            sent += per_txn
            i += 1
            ahead = start + i / txns_per_s - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    return sent


def _cpu_s(pid: int | None) -> float | None:
    """User+system CPU seconds a process has used so far (Linux /proc), or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _connect_pid() -> int | None:
    """The local stack's Kafka Connect worker, to charge Debezium its CPU (None elsewhere)."""
    try:
        from cdcrouter.stack.manager import Stack

        rec = Stack(allow_fetch=False).running_record("connect")
    except Exception:
        return None
    return rec.pid if rec else None


def run_bench(conns: Connections, **kw: Any) -> dict[str, Any]:
    """Run both phases; returns ``{engine: {changes_per_s, p50_ms, p99_ms, ...}}``.

    Raises:
        CaptureError: a service failed during the run (nothing half-measured is reported).
    """
    from confluent_kafka import KafkaException

    try:
        return _run_bench(conns, **kw)
    except KafkaException as exc:
        raise CaptureError(
            f"Kafka failed during the benchmark: {exc.args[0].str() if exc.args else exc}",
            hint="is the broker up and steady? (`cdcrouter stack status`) then run the bench again",
        ) from exc


def _run_bench(
    conns: Connections,
    *,
    changes: int = 200_000,
    rate: int = 2000,
    latency_seconds: float = 15.0,
    with_debezium: bool = True,
    report: Callable[[str], None] = print,
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    schema = name = f"bench_{tag}"
    emb = _pipeline(schema, name, f"raw-bench-{tag}-embedded")
    dbz = _pipeline(schema, name, f"raw-bench-{tag}-debezium")
    work = Path(tempfile.mkdtemp(prefix="cdcrouter-bench-"))
    emb_file, dbz_file, log = (
        _write(emb, work / "emb.yaml"),
        _write(dbz, work / "dbz.yaml"),
        work / "bench.log",
    )
    results: dict[str, Any] = {
        "changes": changes,
        "rate": rate,
        "log": str(log),
        "load_avg_1m_start": round(os.getloadavg()[0], 1),
    }
    capture: subprocess.Popen[bytes] | None = None
    normalizer: subprocess.Popen[bytes] | None = None
    watchers: list[_Watcher] = []
    apply_domain(conns.postgres.conninfo(), schema)
    try:
        # hold both engines back: the embedded slot exists but is idle, the connector is paused
        capture = _spawn(["capture", "run", "--pipeline", str(emb_file)], log)
        _wait_slot(conns, emb.replication.slot, active=True)
        _stop(capture)
        _wait_slot(conns, emb.replication.slot, active=False)
        if with_debezium:
            debezium.deploy(dbz, conns)
            debezium.wait_running(conns, debezium.connector_name(dbz))
            _wait_slot(conns, debezium.debezium_slot(dbz), active=True)
            debezium.ConnectClient(conns)._call("PUT", f"/connectors/{debezium.connector_name(dbz)}/pause")
            normalizer = _spawn(["capture", "normalize", "--pipeline", str(dbz_file)], log)
        report(f"generating {changes:,} changes (backlog)")
        _generate_backlog(conns, schema, changes)

        w = _Watcher(conns, emb.raw_topic.name, decode=False)
        watchers.append(w)
        capture = _spawn(["capture", "run", "--pipeline", str(emb_file)], log)
        _wait_slot(conns, emb.replication.slot, active=True)  # process start-up is not capture time
        t0, cpu0 = time.time(), _cpu_s(capture.pid)
        if not w.wait_for(changes, 600):
            raise CaptureError(f"embedded engine delivered {w.count}/{changes}", hint=f"see {log}")
        cpu1 = _cpu_s(capture.pid)
        results["embedded"] = {"changes_per_s": changes / (w.last - t0), "drain_s": w.last - t0}
        if cpu0 is not None and cpu1 is not None:
            results["embedded"]["cpu_us_per_change"] = (cpu1 - cpu0) / changes * 1e6
        report(f"embedded: {results['embedded']['changes_per_s']:,.0f} changes/s")
        if with_debezium:
            w = _Watcher(conns, dbz.raw_topic.name, decode=False)
            watchers.append(w)
            connect_pid = _connect_pid()
            pids = [p for p in (connect_pid, normalizer.pid if normalizer else None) if p]
            for pid in pids:  # this run's peak, not the long-running Connect worker's lifetime one
                reset_peak_rss(pid)
            t0, cpu0 = time.time(), [_cpu_s(p) for p in pids]
            debezium.ConnectClient(conns)._call("PUT", f"/connectors/{debezium.connector_name(dbz)}/resume")
            if not w.wait_for(changes, 1200):
                raise CaptureError(f"Debezium delivered {w.count}/{changes}", hint=f"see {log}")
            cpu1 = [_cpu_s(p) for p in pids]
            results["debezium"] = {"changes_per_s": changes / (w.last - t0), "drain_s": w.last - t0}
            if connect_pid and None not in cpu0 + cpu1:
                spent = sum(b - a for a, b in zip(cpu0, cpu1, strict=True))  # type: ignore[operator]
                results["debezium"]["cpu_us_per_change"] = spent / changes * 1e6
            report(f"debezium: {results['debezium']['changes_per_s']:,.0f} changes/s")
            results["throughput_ratio"] = (
                results["embedded"]["changes_per_s"] / results["debezium"]["changes_per_s"]
            )

        report(f"latency: {rate:,} changes/s for {latency_seconds:.0f}s, both engines live")
        lat = {"embedded": _Watcher(conns, emb.raw_topic.name, decode=True)}
        if with_debezium:
            lat["debezium"] = _Watcher(conns, dbz.raw_topic.name, decode=True)
        watchers.extend(lat.values())
        time.sleep(1.0)
        sent = _generate_at_rate(conns, schema, rate, latency_seconds)
        for engine, w in lat.items():
            # every change committed must be read: a missing one is an error, not a dropped sample
            wait_for_all(f"bench capture latency ({engine})", lambda w=w: w.count, sent, 120)
            results[engine].update(
                latency_changes=w.count,
                p50_ms=round(percentile(w.latencies_ms, 50) or 0.0, 1),
                p99_ms=round(percentile(w.latencies_ms, 99) or 0.0, 1),
                max_ms=max(w.latencies_ms, default=float("nan")),
            )
            report(
                f"{engine}: p50 {results[engine]['p50_ms']:.1f} ms, p99 {results[engine]['p99_ms']:.1f} ms"
            )
        # peak RSS of the measured processes, read while they still run (the kernel forgets it after)
        results["embedded"]["peak_rss_mb"] = results["peak_rss_mb"] = peak_rss_mb(capture.pid)
        if with_debezium:
            rss = [peak_rss_mb(p) for p in pids]
            results["debezium"]["peak_rss_mb"] = None if None in rss else sum(rss)  # type: ignore[arg-type]
        del results["log"]  # removed below: the engines' log is kept only when a run fails
        return results
    finally:
        for w in watchers:
            w.close()
        _stop(capture)
        _stop(normalizer)
        if "log" not in results:
            shutil.rmtree(work, ignore_errors=True)
        if with_debezium:
            try:
                debezium.undeploy(dbz, conns)
            except Exception as exc:
                report(f"cleanup: could not remove connector {debezium.connector_name(dbz)}: {exc}")
        with contextlib.suppress(Exception):
            conn = source.connect_sql(conns.postgres)
            source.drop_slot(conn, emb.replication.slot)
            source.drop_publication(conn, emb.replication.publication)
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.close()
        with contextlib.suppress(Exception):
            from confluent_kafka.admin import AdminClient

            topics = [emb.raw_topic.name, dbz.raw_topic.name, *debezium.table_topics(dbz)]
            topics += [
                t + s
                for t in (emb.raw_topic.name, dbz.raw_topic.name)
                for s in (".capture-offsets", ".capture-dlq")
            ]
            AdminClient(conns.kafka.to_librdkafka()).delete_topics(topics)
