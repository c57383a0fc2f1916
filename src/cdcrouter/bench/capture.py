"""``cdcrouter bench capture``: our capture against Debezium as its users run it, same table, data
and machine.

Engines (each with its own replication slot on the same publication, so each reads every change):
- ``debezium-alo``: Debezium's PostgreSQL connector on a Kafka Connect worker of its own, writing its
  envelope in Avro (registry) straight to a per-table topic, tuned (:mod:`cdcrouter.bench.debezium`);
- ``debezium-eos``: the same on a worker with ``exactly.once.source.support=enabled``;
- ``cdcrouter``: ``cdcrouter capture run``, exactly once, as shipped (the pipeline's defaults).

1. Warm-up: backlogs through every engine, not counted, until each engine's CPU per change stops
   falling (:func:`_warm_up`): Connect's JIT settles only after several hundred thousand changes.
2. Throughput, ``runs`` rounds: one backlog of N changes (half INSERTs, half UPDATEs of
   ``car_entities``, 1,000 rows per transaction) is committed while every engine is held (our
   process stopped, the connectors STOPPED); then each engine in turn drains it alone. The clock
   is the same for all: from the first record of the backlog readable (read_committed) in the
   engine's topic to the last, counted by reading the topic; CPU per change is the engine's process
   (the Connect JVM, our capture) over that window. The engine's start (slot active -> first record)
   is reported apart: it is not throughput.
3. Latency, ``runs`` rounds per engine, each engine alone: 3 s warm-up at ``rate``, then ``rate``
   changes/s (20-row transactions) for ``seconds``; per change, latency = the moment a consumer
   reads it - the moment its COMMIT returned to the generator. Every change sent must be read,
   else the run fails (:class:`cdcrouter.bench.stats.MissingRecords`).

Every row has the 1-minute load average and the engine process's peak RSS.
"""

from __future__ import annotations

import contextlib
import json
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaException, TopicPartition

from cdcrouter.bench import debezium as dbz
from cdcrouter.bench.stats import (
    load_average,
    peak_rss_mb,
    percentile,
    reset_peak_rss,
    spread,
    summarize,
    wait_for_all,
)
from cdcrouter.capture import debezium as capture_debezium
from cdcrouter.capture import source
from cdcrouter.capture.domain import apply_domain
from cdcrouter.capture.pipeline import Pipeline, pipeline_from_dict
from cdcrouter.config.connections import Connections
from cdcrouter.errors import CaptureError

ROWS_PER_TXN = 1000
LATENCY_ROWS_PER_TXN = 20
PARTITIONS = 3
ENGINES = ("debezium-alo", "debezium-eos", "cdcrouter")
DEBEZIUM_FORMATS = ("avro", "json", "both")
WARMUP_SETTLED = 0.10  # a warm-up round this much cheaper per change than the one before: not settled
WARMUP_MAX_ROUNDS = 5


def _pipeline(schema: str, slot: str, publication: str, topic: str) -> Pipeline:
    return pipeline_from_dict(
        {
            "schema": schema,
            "raw_topic": {"name": topic, "partitions": PARTITIONS},
            "replication": {"slot": slot, "publication": publication, "snapshot": "never"},
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
            proc.wait(10)


def _cpu_s(pid: int | None) -> float | None:
    """User+system CPU seconds a process has used so far (Linux /proc), or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sched_s(pid: int | None) -> tuple[float, float] | None:
    """(CPU s, s spent runnable but waiting for a core) of all a process's threads so far, from the
    scheduler's statistics (Linux /proc/<pid>/task/*/schedstat), or None."""
    if pid is None:
        return None
    cpu = wait = 0
    try:
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, ValueError):  # a thread that just ended
                fields = stat.read_text().split()
                cpu, wait = cpu + int(fields[0]), wait + int(fields[1])
    except OSError:
        return None
    return cpu / 1e9, wait / 1e9


MIN_CPU_WINDOW_S = 0.5  # a shorter first-to-last-record window times CPU against the reader's lag


def _window_cpu_s(ticks: tuple[float, float], sched: tuple[Any, Any]) -> float:
    """CPU seconds between two probes. /proc/<pid>/stat counts 10 ms ticks (a short window of a
    3 us/change engine reads 0), while the per-thread scheduler sums are exact but lose a thread
    that ends inside the window; so the ticks decide once the window holds 1 s of CPU or more."""
    by_ticks = ticks[1] - ticks[0]
    if by_ticks >= 1.0 or sched[0] is None or sched[1] is None:
        return by_ticks
    by_sched = sched[1][0] - sched[0][0]
    return by_sched if by_sched >= 0 else by_ticks


def _slot_active(conns: Connections, slot: str, active: bool, timeout_s: float = 120) -> float:
    """Wait (polling every 5 ms) until the slot is (in)active; the time.time() it was seen so."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(conns.postgres.conninfo(), autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
            if row is not None and bool(row[0]) == active:
                return time.time()
            time.sleep(0.005)
    raise CaptureError(f"slot {slot} did not become {'active' if active else 'idle'}", hint="see the logs")


def _avro_string_key(key: bytes) -> str:
    """Debezium's key for a one-text-column primary key: Confluent framing (magic 0 + 4-byte schema
    id) then an Avro record of one string: a zigzag varint length and the UTF-8 bytes."""
    if key[0] != 0:
        raise CaptureError("a Debezium key is not in the registry's wire format", hint="check the converter")
    shift = length = 0
    i = 5
    while True:
        b = key[i]
        length |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            break
        shift += 7
    length = (length >> 1) ^ -(length & 1)
    return key[i : i + length].decode()


def _json_id_key(key: bytes) -> str:
    """Debezium's key with JSON without schemas: ``{"id": "..."}``."""
    return str(json.loads(key)["id"])


class _Watcher:
    """Reads a topic from its current end (read_committed), counting and optionally timestamping
    each record by key at the moment it is read.

    ``probe`` (the engine's CPU counters) is read when the first records arrive and when ``target``
    records have: the steady-state window of a throughput run, the same for every engine."""

    def __init__(
        self,
        conns: Connections,
        topic: str,
        key_of: Callable[[bytes], str] | None,
        probe: Callable[[], Any] | None = None,
        target: int = 0,
    ) -> None:
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
        if meta.error is not None:
            raise CaptureError(f"topic {topic}: {meta.error.str()}", hint="the warm-up creates it")
        parts = []
        for p in meta.partitions:
            _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            parts.append(TopicPartition(topic, p, high))
        self.consumer.assign(parts)
        self.key_of = key_of
        self.probe, self.target = probe, target
        self.count = 0
        self.first = self.last = 0.0
        self.first_batch = 0  # records in the first batch read: they arrived at ``first``
        self.at_first: Any = None
        self.at_target: Any = None
        self.seen: dict[str, float] = {}
        self.first_value: bytes | None = None
        self.error: str | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                # a short timeout: every record is timestamped when consume() returns
                msgs = self.consumer.consume(10_000, 0.002)
                now = time.time()
                for m in msgs:
                    if m.error():
                        self.error = m.error().str()
                        continue
                    self.count += 1
                    if self.key_of is not None:
                        self.seen.setdefault(self.key_of(m.key()), now)
                    if self.first_value is None:
                        self.first_value = m.value()
                if msgs:
                    self.last = now
                    if not self.first:
                        self.first, self.first_batch = now, self.count
                        self.at_first = self.probe() if self.probe else None
                    if self.target and self.at_target is None and self.count >= self.target:
                        self.at_target = self.probe() if self.probe else None
        finally:
            self.consumer.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


@dataclass
class _Engine:
    """One engine under test: how to hold it back, let it stream, and which process to charge."""

    name: str
    slot: str
    topic: str
    key_of: Callable[[bytes], str]
    release: Callable[[], None]
    hold: Callable[[], None]
    pid: Callable[[], int | None]
    extra: dict[str, Any] = field(default_factory=dict)


class _Ours:
    def __init__(self, conns: Connections, pipeline: Pipeline, work: Path) -> None:
        self.conns, self.pipeline = conns, pipeline
        self.file = _write(pipeline, work / "pipeline.yaml")
        self.log = work / "capture.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def release(self) -> None:
        self.proc = _spawn(["capture", "run", "--pipeline", str(self.file)], self.log)

    def hold(self) -> None:
        if self.proc is None:
            return
        _stop(self.proc)
        self.proc = None
        _slot_active(self.conns, self.pipeline.replication.slot, active=False)

    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class _Debezium:
    """One connector (one format) on a worker that may hold others: only one is ever RUNNING."""

    def __init__(
        self, conns: Connections, pipeline: Pipeline, worker: dbz.Worker, *, value_format: str
    ) -> None:
        self.conns, self.pipeline, self.worker = conns, pipeline, worker
        self.eos, self.value_format = worker.eos, value_format
        self.name = f"bench-{worker.tag}-{_engine_name(worker.eos, value_format)}"

    def start(self) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        # created here (as Connect would, with as many partitions as our raw topic) so the first
        # run's reader can start at its end
        admin = AdminClient(self.conns.kafka.to_librdkafka())
        for fut in admin.create_topics([NewTopic(dbz.topic(self.pipeline), PARTITIONS, 1)]).values():
            fut.result(30)
        if self.worker.proc is None:
            self.worker.start()
        config = dbz.connector_config(
            self.pipeline, self.conns, eos=self.eos, partitions=PARTITIONS, value_format=self.value_format
        )
        self.worker.call("PUT", f"/connectors/{self.name}/config", json=config)
        self.worker.wait_state(self.name, "RUNNING")
        _slot_active(self.conns, self.slot, active=True)

    @property
    def slot(self) -> str:
        return capture_debezium.debezium_slot(self.pipeline)

    def release(self) -> None:
        self.worker.call("PUT", f"/connectors/{self.name}/resume")

    def hold(self) -> None:
        self.worker.call("PUT", f"/connectors/{self.name}/stop")
        self.worker.wait_state(self.name, "STOPPED")
        _slot_active(self.conns, self.slot, active=False)

    def pid(self) -> int | None:
        return self.worker.proc.pid if self.worker.proc is not None else None

    def close(self) -> None:
        if self.worker.proc is not None:
            with contextlib.suppress(Exception):
                self.worker.call("DELETE", f"/connectors/{self.name}")


def _engine_name(eos: bool, value_format: str) -> str:
    return f"debezium-{_slot_suffix(eos, value_format).replace('_', '-')}"


def _slot_suffix(eos: bool, value_format: str) -> str:
    return f"{'eos' if eos else 'alo'}{'_json' if value_format == 'json' else ''}"


def _generate_backlog(conns: Connections, schema: str, n: int, prefix: str) -> None:
    half = n // 2
    with psycopg.connect(conns.postgres.conninfo(), options=f"-c search_path={schema}") as conn:
        for a in range(0, half, ROWS_PER_TXN):
            b = min(a + ROWS_PER_TXN, half) - 1
            conn.execute(
                "INSERT INTO car_entities (id, vin, make, model, model_year, price, color, created_at, "
                "updated_at) SELECT %s || g, 'VIN' || g, 'Volvo', 'XC40', 2020, 41999.90, 'red', now(), "
                f"now() FROM generate_series({a}, {b}) g",
                (prefix,),
            )
            conn.commit()
        for a in range(0, n - half, ROWS_PER_TXN):
            b = min(a + ROWS_PER_TXN, n - half) - 1
            conn.execute(
                "UPDATE car_entities SET price = price + 1, updated_at = now() "
                f"WHERE id IN (SELECT %s || g FROM generate_series({a}, {b}) g)",
                (prefix,),
            )
            conn.commit()


def _generate_at_rate(
    conns: Connections, schema: str, rate: int, seconds: float, prefix: str
) -> dict[str, float]:
    """Commit ``rate`` changes/s for ``seconds``; each row id -> when its COMMIT returned (time.time())."""
    per_txn = LATENCY_ROWS_PER_TXN
    txns_per_s = max(1, rate // per_txn)
    committed: dict[str, float] = {}
    with psycopg.connect(conns.postgres.conninfo(), options=f"-c search_path={schema}") as conn:
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < seconds:
            ids = [f"{prefix}{i}-{g}" for g in range(per_txn)]
            conn.execute(
                "INSERT INTO car_entities (id, vin, make, model, created_at, updated_at) "
                "SELECT x, 'V', 'M', 'X', now(), now() FROM unnest(%s::text[]) x",
                (ids,),
            )
            conn.commit()
            done = time.time()
            for row_id in ids:
                committed[row_id] = done
            i += 1
            ahead = start + i / txns_per_s - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    return committed


def _throughput_run(conns: Connections, e: _Engine, n: int, report: Callable[[str], None]) -> dict[str, Any]:
    """Release the engine onto a backlog of ``n`` changes and time it to the last record readable.

    The headline window runs from the first record readable to the last, for every engine alike:
    an engine's start (Connect resuming the task and Debezium searching the WAL for its resume
    position, or our process connecting) is not throughput, and is reported apart (``start_s``,
    ``*_from_active``). CPU and run-queue wait are read at both ends of the same window."""
    load = load_average()
    pid: int | None = None

    def probe() -> tuple[float | None, tuple[float, float] | None]:
        return _cpu_s(pid), _sched_s(pid)

    w = _Watcher(conns, e.topic, None, probe, n)
    try:
        e.release()
        pid = e.pid()
        t0 = _slot_active(conns, e.slot, active=True)
        if e.name != "cdcrouter" and pid is not None:
            reset_peak_rss(pid)  # the worker lives across runs: this run's peak only
        cpu0, sched0 = probe()
        wait_for_all(f"bench capture throughput ({e.name})", lambda: w.count, n, 900)
        deadline = time.monotonic() + 10
        while w.at_target is None and time.monotonic() < deadline:
            time.sleep(0.01)
        rss = peak_rss_mb(pid)
        time.sleep(0.5)  # anything beyond n now is a duplicate
        (cpu_a, sched_a), (cpu_b, sched_b) = w.at_first or (None, None), w.at_target or (None, None)
        steady = n - w.first_batch
        if steady <= 0 or w.last <= w.first:  # all of it in one read (a tiny backlog): no window
            steady, w.first, cpu_a, sched_a = n, t0, cpu0, sched0
        row: dict[str, Any] = {
            "changes": n,
            "changes_per_s": round(steady / (w.last - w.first)),
            "start_s": round(w.first - t0, 2),
            "changes_per_s_from_active": round(n / (w.last - t0)),
            "drain_s": round(w.last - t0, 2),
            "records_read": w.count,
            "peak_rss_mb": rss,
            "load_1m": load,
        }
        if w.last - w.first < MIN_CPU_WINDOW_S:
            # the reader sees a short run late: the engine may have done its work before the first
            # record was read, so the window's CPU says nothing; count from the slot turning active
            steady, cpu_a, sched_a = n, cpu0, sched0
            row["cpu_window"] = "from slot active (run too short for a steady window)"
        if cpu_a is not None and cpu_b is not None:
            cpu = _window_cpu_s((cpu_a, cpu_b), (sched_a, sched_b))
            row["cpu_us_per_change"] = round(cpu / steady * 1e6, 2)
        if cpu0 is not None and cpu_b is not None:
            row["cpu_us_per_change_from_active"] = round((cpu_b - cpu0) / n * 1e6, 1)
        if sched_a is not None and sched_b is not None:  # its threads' time runnable but without a core
            row["runqueue_wait_s"] = round(sched_b[1] - sched_a[1], 2)
        if w.first_value is not None:
            row["value_format"] = "registry (magic 0)" if w.first_value[:1] == b"\0" else "other"
        report(
            f"{e.name}: {row['changes_per_s']:,} changes/s, {row.get('cpu_us_per_change')} us CPU/change "
            f"(first record {row['start_s']} s after its slot turned active), peak RSS {rss} MB (load {load})"
        )
        return row
    finally:
        w.close()
        e.hold()


def _latency_run(
    conns: Connections,
    schema: str,
    e: _Engine,
    rate: int,
    seconds: float,
    prefix: str,
    report: Callable[[str], None],
) -> dict[str, Any]:
    load = load_average()
    w = _Watcher(conns, e.topic, e.key_of)
    try:
        e.release()
        _slot_active(conns, e.slot, active=True)
        pid = e.pid()
        if e.name != "cdcrouter" and pid is not None:
            reset_peak_rss(pid)
        # warm-up at the rate (also drains what the other engines' runs left in this slot)
        warm = _generate_at_rate(conns, schema, rate, 3.0, f"{prefix}w")
        wait_for_all(
            f"bench capture latency warm-up ({e.name})",
            lambda: len(warm.keys() & w.seen.keys()),
            len(warm),
            300,
        )
        sched0, t0 = _sched_s(pid), time.monotonic()
        sent = _generate_at_rate(conns, schema, rate, seconds, f"{prefix}m")
        wait_for_all(
            f"bench capture latency ({e.name})", lambda: sum(1 for k in sent if k in w.seen), len(sent), 120
        )
        sched1, elapsed = _sched_s(pid), time.monotonic() - t0
        lat = [(w.seen[k] - t) * 1000 for k, t in sent.items()]
        row = {
            "rate": rate,
            "achieved_rate": round(len(sent) / seconds),  # the generator falls behind on a loaded machine
            "changes": len(sent),
            "p50_ms": round(percentile(lat, 50) or 0.0, 1),
            "p99_ms": round(percentile(lat, 99) or 0.0, 1),
            "max_ms": round(max(lat), 1),
            "peak_rss_mb": peak_rss_mb(pid),
            "load_1m": load,
        }
        if sched0 is not None and sched1 is not None:
            # the engine's own work vs its time waiting for a core, per second of the measured window
            row["cpu_ms_per_s"] = round((sched1[0] - sched0[0]) / elapsed * 1000, 1)
            row["runqueue_wait_ms_per_s"] = round((sched1[1] - sched0[1]) / elapsed * 1000, 1)
        report(f"{e.name}: p50 {row['p50_ms']} / p99 {row['p99_ms']} / max {row['max_ms']} ms (load {load})")
        return row
    finally:
        w.close()
        e.hold()


def _warm_up(
    conns: Connections,
    schema: str,
    chosen: list[_Engine],
    changes: int,
    report: Callable[[str], None],
) -> list[dict[str, float | None]]:
    """Backlogs of ``changes`` through every engine, not counted, until each engine's CPU per change
    stops falling (a round less than ``WARMUP_SETTLED`` better than the one before it): Connect's JIT
    and class loading settle only after several hundred thousand changes, and a round measured
    before that charges Debezium for its warm-up. At least 2 rounds, at most ``WARMUP_MAX_ROUNDS``.
    Returns each round's CPU µs per change by engine."""
    trace: list[dict[str, float | None]] = []
    for i in range(WARMUP_MAX_ROUNDS):
        report(f"warm-up round {i + 1}: {changes:,} changes through every engine (not counted)")
        _generate_backlog(conns, schema, changes, f"w{i}-")
        rows = {e.name: _throughput_run(conns, e, changes, report) for e in chosen}
        trace.append({name: row.get("cpu_us_per_change") for name, row in rows.items()})
        if _settled(trace):
            break
    return trace


def _settled(trace: list[dict[str, float | None]]) -> bool:
    """After 2+ rounds: no engine's CPU per change fell by ``WARMUP_SETTLED`` or more in the last one."""
    if len(trace) < 2:
        return False
    before, now = trace[-2], trace[-1]

    def still_falling(engine: str) -> bool:
        b, n = before.get(engine), now[engine]
        return b is not None and n is not None and n <= b * (1 - WARMUP_SETTLED)

    return not any(still_falling(k) for k in now)


def run_bench(conns: Connections, **kw: Any) -> dict[str, Any]:
    """Warm up, then ``runs`` throughput rounds and ``runs`` latency rounds of every engine.

    Raises:
        CaptureError: a service failed during the run (nothing half-measured is reported).
        MissingRecords: a run did not see every change it made.
    """
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
    changes: int = 500_000,
    rate: int = 2000,
    latency_seconds: float = 15.0,
    runs: int = 3,
    warmup_changes: int = 300_000,
    engines: tuple[str, ...] = ENGINES,
    debezium_format: str = "avro",
    report: Callable[[str], None] = print,
) -> dict[str, Any]:
    unknown = set(engines) - set(ENGINES)
    if unknown:
        raise CaptureError(f"unknown engine(s) {sorted(unknown)}", hint=f"choose from {', '.join(ENGINES)}")
    tag = uuid.uuid4().hex[:6]
    schema = f"bench_{tag}"
    publication = f"bench_{tag}_pub"
    work = Path(tempfile.mkdtemp(prefix="cdcrouter-bench-capture-"))
    ours_p = _pipeline(schema, f"bench_{tag}", publication, f"raw-bench-{tag}")
    if debezium_format not in DEBEZIUM_FORMATS:
        raise CaptureError(
            f"unknown Debezium format {debezium_format!r}", hint=f"choose {', '.join(DEBEZIUM_FORMATS)}"
        )
    formats = ("avro", "json") if debezium_format == "both" else (debezium_format,)
    apply_domain(conns.postgres.conninfo(), schema)
    capture_debezium.prepare_source(ours_p, conns)  # the one publication every engine reads
    ours = _Ours(conns, ours_p, work)
    workers = {eos: dbz.Worker(conns, eos, work, tag) for eos in (False, True)}
    dbzs = {  # a connector per guarantee and format, each with its own slot on the publication
        _engine_name(eos, fmt): _Debezium(
            conns,
            _pipeline(schema, f"bench_{tag}_{_slot_suffix(eos, fmt)}", publication, "unused"),
            workers[eos],
            value_format=fmt,
        )
        for eos in (False, True)
        for fmt in formats
    }
    all_engines = {
        "cdcrouter": _Engine(
            "cdcrouter",
            ours_p.replication.slot,
            ours_p.raw_topic.name,
            bytes.decode,
            ours.release,
            ours.hold,
            ours.pid,
        ),
        **{
            name: _Engine(
                name,
                d.slot,
                dbz.topic(d.pipeline),
                _avro_string_key if d.value_format == "avro" else _json_id_key,
                d.release,
                d.hold,
                d.pid,
            )
            for name, d in dbzs.items()
        },
    }
    # "debezium-alo" chooses that connector in every format asked for
    chosen = [e for name, e in all_engines.items() if name.removesuffix("-json") in engines]
    results: dict[str, Any] = {
        "changes": changes,
        "rate": rate,
        "latency_seconds": latency_seconds,
        "runs": runs,
        "machine": f"{os.cpu_count()} cores",
        "debezium": {
            "format": debezium_format,
            "connector": dbz.TUNING,
            "producer": dbz.PRODUCER,
            "jvm": " ".join(dbz.JVM_OPTS),
        },
        "load_1m_start": load_average(),
    }
    failed = True
    try:
        # create our slot and topics, then hold every engine
        ours.release()
        _slot_active(conns, ours_p.replication.slot, active=True)
        ours.hold()
        for name, d in dbzs.items():
            if name.removesuffix("-json") in engines:
                guarantee = "exactly-once" if d.eos else "at-least-once"
                report(f"starting connector {name} ({d.value_format}, {guarantee} worker)")
                d.start()
                d.hold()
        results["warmup"] = _warm_up(conns, schema, chosen, warmup_changes, report)
        rows: dict[str, list[dict[str, Any]]] = {e.name: [] for e in chosen}
        for r in range(runs):
            report(f"throughput round {r + 1}/{runs}: {changes:,} changes (backlog)")
            _generate_backlog(conns, schema, changes, f"t{r}-")
            for e in chosen:
                rows[e.name].append(_throughput_run(conns, e, changes, report))
        results["throughput"] = {name: summarize(rs) for name, rs in rows.items()}
        lrows: dict[str, list[dict[str, Any]]] = {e.name: [] for e in chosen}
        for r in range(runs):
            report(
                f"latency round {r + 1}/{runs}: {rate:,} changes/s for {latency_seconds:.0f} s, "
                "each engine alone"
            )
            for i, e in enumerate(chosen):
                lrows[e.name].append(
                    _latency_run(conns, schema, e, rate, latency_seconds, f"l{r}e{i}", report)
                )
        results["latency"] = {name: summarize(rs) for name, rs in lrows.items()}
        results["load_1m_end"] = load_average()
        _ratios(results)
        failed = False
        return results
    finally:
        for d in dbzs.values():
            d.close()
        for w in workers.values():
            w.stop()
        ours.hold()
        _cleanup(conns, schema, publication, ours_p, dbzs, report)
        if failed:
            report(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _ratios(results: dict[str, Any]) -> None:
    tp, lat = results["throughput"], results["latency"]
    ours = tp.get("cdcrouter", {}).get("changes_per_s")
    for name in (n for n in tp if n.startswith("debezium-")):
        theirs = tp.get(name, {}).get("changes_per_s")
        if ours and theirs:
            results[f"throughput_ratio_vs_{name}"] = round(_median(ours) / _median(theirs), 2)
        p99, their_p99 = lat.get("cdcrouter", {}).get("p99_ms"), lat.get(name, {}).get("p99_ms")
        if p99 and their_p99:
            results[f"p99_ratio_vs_{name}"] = round(_median(p99) / _median(their_p99), 2)


def _median(v: Any) -> float:
    return float(v["median"]) if isinstance(v, dict) else float(v)


def _cleanup(
    conns: Connections,
    schema: str,
    publication: str,
    ours_p: Pipeline,
    dbzs: dict[str, _Debezium],
    report: Callable[[str], None],
) -> None:
    with contextlib.suppress(Exception):
        conn = source.connect_sql(conns.postgres)
        for slot in (ours_p.replication.slot, *(d.slot for d in dbzs.values())):
            for _ in range(100):  # a stopped task lets go of its slot shortly after
                try:
                    source.drop_slot(conn, slot)
                    break
                except Exception:
                    time.sleep(0.1)
        source.drop_publication(conn, publication)
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()
    with contextlib.suppress(Exception):
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({**conns.kafka.to_librdkafka(), "log_level": 0})
        raw = ours_p.raw_topic
        wanted = {raw.name, raw.offsets_topic, raw.dlq_topic}
        for d in dbzs.values():
            prefix = capture_debezium.topic_prefix(d.pipeline) + "."  # its table and message topics
            wanted |= {
                *d.worker.internal_topics(),
                *(t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)),
            }
        existing = set(admin.list_topics(timeout=10).topics)
        # wait for the deletes: an AdminClient dropped at once may never send them (topics were left)
        for fut in admin.delete_topics(sorted(wanted & existing), request_timeout=30).values():
            with contextlib.suppress(Exception):
                fut.result(timeout=30)
    report("cleaned up: slots, publication, schema, topics")


def format_table(res: dict[str, Any]) -> str:
    """The rows as BENCHMARKS.md shows them: median (min-max) of the runs."""

    def cell(v: Any, fmt: str = "{:,.0f}") -> str:
        if isinstance(v, dict):
            return f"{fmt.format(v['median'])} ({fmt.format(v['min'])}-{fmt.format(v['max'])})"
        return "-" if v is None else fmt.format(v)

    f1 = "{:,.1f}"
    lines = [
        f"throughput: {res['changes']:,} changes backlog, {res['runs']} runs, median (min-max); "
        "first record -> last record readable (start: slot active -> first record)",
        "| engine | changes/s | CPU µs/change | start s | run-queue wait s | peak RSS MB | load 1m |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in res.get("throughput", {}).items():
        cells = [
            cell(r.get("changes_per_s")),
            cell(r.get("cpu_us_per_change"), f1),
            cell(r.get("start_s"), f1),
            cell(r.get("runqueue_wait_s"), f1),
            cell(r.get("peak_rss_mb")),
            cell(r.get("load_1m"), f1),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        f"latency: {res['rate']:,} changes/s for {res['latency_seconds']:.0f} s, COMMIT -> readable, ms",
        "| engine | achieved changes/s | p50 | p99 | max | CPU ms/s | run-queue wait ms/s | peak RSS MB "
        "| load 1m |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res.get("latency", {}).items():
        cells = [
            cell(r.get("achieved_rate")),
            *(
                cell(r.get(k), f1)
                for k in ("p50_ms", "p99_ms", "max_ms", "cpu_ms_per_s", "runqueue_wait_ms_per_s")
            ),
            cell(r.get("peak_rss_mb")),
            cell(r.get("load_1m"), f1),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [f"{k}: {v}" for k, v in res.items() if "_ratio_vs_" in k]
    return "\n".join(lines)


__all__ = ["ENGINES", "format_table", "run_bench", "spread"]
