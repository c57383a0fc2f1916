"""Fused mode vs two hops: COMMIT -> readable in a filtered topic, at a fixed change rate.

Each run has its own schema, slot, raw topic and four filtered topics of 3 partitions (the seed's
shape: 12 filtered partitions per transaction). The four filters split the car ids by their last
digit, so every change reaches exactly one filtered topic, and the reader knows every record it
must see: a record not readable within the deadline is an error, never a dropped sample.

- ``fused``: ``cdcrouter capture run --route filters.yaml`` (one process, one transaction).
- ``two-hop``: ``cdcrouter capture run`` + ``cdcrouter run`` (two processes, two transactions).

Latency = the reader's wall clock when a read_committed consumer returns the record (polling every
2 ms) minus ``eventHeader.createdDate`` (the PostgreSQL COMMIT time, same host clock). A warm-up
at the same rate comes first; then ``seconds`` of load are measured. After that a backlog of
``backlog`` changes is written in 1,000-row transactions and timed until all of it is readable:
the end-to-end throughput. Peak RSS of the engine processes (VmHWM) and the load average are
recorded with each run.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import fastavro
import psycopg
from confluent_kafka import Consumer, TopicPartition

from cdcrouter.bench.capture import _cpu_s, _spawn, _stop
from cdcrouter.bench.stats import load_average, peak_rss_mb, percentile, repeat, require_all
from cdcrouter.config.connections import Connections
from cdcrouter.errors import CdcrouterError

__all__ = ["run_fused_bench"]

MODES = ("fused", "two-hop")
PER_TXN = 20
_DIGITS = ("[0-2]", "[3-4]", "[5-7]", "[89]")

_FILTER = """\
  - id: f{i}
    consumerId: c{i}
    outputTopic: {prefix}f{i}
    conditions:
      - field: eventBody.entities[0].entityId
        operator: matches
        value: "{digits}$"
"""


def _filters_yaml(prefix: str) -> str:
    return "filters:\n" + "".join(_FILTER.format(i=i, prefix=prefix, digits=d) for i, d in enumerate(_DIGITS))


class _Reader:
    """Reads the filtered topics from their current end (read_committed); timestamps each record
    by its entity id, the key of what the workload wrote."""

    def __init__(self, conns: Connections, topics: list[str]) -> None:
        from cdcrouter.schemas import parsed_filtered_schema

        self.consumer = Consumer(
            {
                **conns.kafka.to_librdkafka(),
                "group.id": f"bench-fused-{uuid.uuid4().hex[:8]}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
                "log_level": 0,
            }
        )
        parts = []
        for topic in topics:
            meta = self.consumer.list_topics(topic, timeout=10).topics[topic]
            for p in meta.partitions:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                parts.append(TopicPartition(topic, p, high))
        self.consumer.assign(parts)
        self.schema = parsed_filtered_schema()
        self.seen: dict[str, float] = {}  # entity id -> latency ms
        self.duplicates = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            msgs = self.consumer.consume(10_000, 0.002)  # see capture bench: a long timeout adds to latency
            now_ms = time.time() * 1000
            for m in msgs:
                if m.error():
                    continue
                ev: Any = fastavro.schemaless_reader(io.BytesIO(m.value()[5:]), self.schema, None)
                eid = ev["eventBody"]["entities"][0]["entityId"]
                if eid in self.seen:
                    self.duplicates += 1
                self.seen[eid] = now_ms - ev["eventHeader"]["createdDate"]
        self.consumer.close()

    def wait_for(self, what: str, ids: list[str], timeout_s: float) -> None:
        """Wait until every id was read; a missing one is an error (stats.MissingRecords)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if all(i in self.seen for i in ids):
                return
            time.sleep(0.05)
        seen = sum(1 for i in ids if i in self.seen)
        require_all(what, seen, len(ids), time.monotonic() - started)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def _write_at_rate(conn: psycopg.Connection, tag: str, rate: int, seconds: float) -> list[str]:
    """``rate`` car inserts/s in ``PER_TXN``-row transactions; returns the ids written."""
    txns_per_s = max(1, rate // PER_TXN)
    ids: list[str] = []
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        batch = [f"{tag}{i * PER_TXN + j}" for j in range(PER_TXN)]
        conn.execute(
            "INSERT INTO car_entities (id, vin, make, model) SELECT unnest(%s::text[]), 'V', 'M', 'X'",
            (batch,),
        )
        conn.commit()
        ids += batch
        i += 1
        ahead = start + i / txns_per_s - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    return ids


def _write_backlog(conn: psycopg.Connection, tag: str, n: int) -> list[str]:
    ids = []
    for a in range(0, n, 1000):
        batch = [f"{tag}{i}" for i in range(a, min(n, a + 1000))]
        conn.execute(
            "INSERT INTO car_entities (id, vin, make, model) SELECT unnest(%s::text[]), 'V', 'M', 'X'",
            (batch,),
        )
        conn.commit()
        ids += batch
    return ids


def _one_run(
    conns: Connections, mode: str, rate: int, seconds: float, warmup_s: float, backlog: int, work: Path
) -> dict[str, Any]:
    from cdcrouter.capture import apply_domain, pipeline_from_dict
    from cdcrouter.capture.source import connect_sql, drop_publication, drop_slot
    from cdcrouter.schemas.registry import RegistryClient, apply_schemas, desired_subjects, plan_schemas
    from cdcrouter.topics import admin_client, apply_topics, plan_topics, topics_for

    name = f"bfu_{uuid.uuid4().hex[:8]}"
    prefix = name.replace("_", "-") + "-"
    raw = f"{prefix}raw"
    apply_domain(conns.postgres.conninfo(), name)
    filters = work / f"{name}.filters.yaml"
    filters.write_text(_filters_yaml(prefix))
    pipeline = pipeline_from_dict(
        {
            "schema": name,
            "raw_topic": {"name": raw, "partitions": 3},
            "replication": {"slot": name, "publication": f"{name}_pub", "snapshot": "never"},
            "batching": {"max_events": 20000, "max_ms": 50},
            "tables": {"car_entities": {"entity_type": "Car"}},
        }
    )
    pfile = work / f"{name}.pipeline.yaml"
    from ruamel.yaml import YAML

    YAML().dump(
        pipeline.model_dump(by_alias=True, exclude={"source_file", "connections"}, exclude_none=True), pfile
    )
    specs = topics_for(filters, raw_topic=raw)
    admin = admin_client(conns.kafka.to_librdkafka())
    apply_topics(admin, plan_topics(admin, specs))
    topics = sorted(s.name for s in specs if s.role == "filtered")
    with RegistryClient(conns.registry.to_client_conf()) as reg:
        apply_schemas(reg, plan_schemas(reg, desired_subjects(raw, topics)))
    log = work / f"{name}.{mode}.log"
    procs: list[subprocess.Popen[bytes]] = []
    reader = None
    try:
        if mode == "fused":
            procs.append(_spawn(["capture", "run", "-p", str(pfile), "--route", str(filters)], log))
        else:
            procs.append(_spawn(["capture", "run", "-p", str(pfile)], log))
            procs.append(
                _spawn(
                    ["run", "-f", str(filters), "--raw-topic", raw, "-g", name, "--instance-id", name], log
                )
            )
        _wait_slot(conns, name, procs, log)
        reader = _Reader(conns, topics)
        with psycopg.connect(conns.postgres.conninfo(), options=f"-c search_path={name}") as conn:
            warm = _write_at_rate(conn, "W", rate, warmup_s)
            reader.wait_for(f"{mode} warm-up", warm, 60)
            cpu0 = sum(_cpu_s(p.pid) or 0.0 for p in procs)
            t0 = time.monotonic()
            ids = _write_at_rate(conn, "M", rate, seconds)
            sent_s = time.monotonic() - t0
            reader.wait_for(f"{mode} latency (log: {log})", ids, 30)
            cpu = sum(_cpu_s(p.pid) or 0.0 for p in procs) - cpu0
            lat = [reader.seen[i] for i in ids]
            t1 = time.monotonic()
            bl = _write_backlog(conn, "B", backlog) if backlog else []
            reader.wait_for(f"{mode} backlog", bl, 300)
            backlog_s = time.monotonic() - t1
        return {
            "mode": mode,
            "changes": len(ids),
            "rate": round(len(ids) / sent_s),
            "p50_ms": round(percentile(lat, 50) or 0, 1),
            "p99_ms": round(percentile(lat, 99) or 0, 1),
            "max_ms": round(max(lat), 1),
            "duplicates": reader.duplicates,
            "cpu_us_per_change": round(cpu / len(ids) * 1e6, 1),
            "backlog": len(bl),
            "backlog_changes_per_s": round(len(bl) / backlog_s) if bl else None,
            "peak_rss_mb": {
                ("capture" if i == 0 else "router"): peak_rss_mb(p.pid) for i, p in enumerate(procs)
            },
            "load_1m_end": load_average(),
        }
    finally:
        if reader is not None:
            reader.close()
        for p in procs:
            _stop(p)
        conn2 = connect_sql(conns.postgres)
        try:
            drop_slot(conn2, name)
            drop_publication(conn2, f"{name}_pub")
            conn2.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            conn2.close()
        futures = admin.delete_topics(
            [s.name for s in specs] + [f"{raw}.capture-offsets", f"{raw}.capture-dlq"]
        )
        for fut in futures.values():
            with contextlib.suppress(Exception):  # best effort: a topic never created
                fut.result(30)


def _wait_slot(conns: Connections, slot: str, procs: list[subprocess.Popen[bytes]], log: Path) -> None:
    deadline = time.monotonic() + 90
    with psycopg.connect(conns.postgres.conninfo(), autocommit=True) as conn:
        while time.monotonic() < deadline:
            for p in procs:
                if p.poll() is not None:
                    raise CdcrouterError("an engine exited during start-up", hint=log.read_text()[-1500:])
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
            if row is not None and row[0]:
                return
            time.sleep(0.1)
    raise CdcrouterError(f"slot {slot} never became active", hint=str(log))


def run_fused_bench(
    conns: Connections,
    *,
    rate: int = 2000,
    seconds: float = 15.0,
    warmup_s: float = 3.0,
    runs: int = 3,
    backlog: int = 20_000,
    modes: tuple[str, ...] = MODES,
    report: Any = None,
) -> dict[str, Any]:
    """``runs`` rounds of every mode (interleaved in each round, so load drifts hit both); each
    figure per mode as its median and range over the rounds (:func:`cdcrouter.bench.stats.repeat`),
    with every round's row under ``each_run``."""
    for mode in modes:
        if mode not in MODES:
            raise CdcrouterError(f"unknown mode {mode!r}", hint=f"one of {', '.join(MODES)}")
    with tempfile.TemporaryDirectory(prefix="cdcrouter-bench-fused-") as tmp:

        def one_round() -> dict[str, Any]:
            out: dict[str, Any] = {"rate_target": rate, "seconds": seconds}
            for mode in modes:
                out[mode] = _one_run(conns, mode, rate, seconds, warmup_s, backlog, Path(tmp))
                if report is not None:
                    report(f"{mode}: {json.dumps(out[mode])}")
            return out

        return repeat(one_round, runs, report)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cold_demo_once(mode: str, changes: int) -> dict[str, Any]:
    """A fresh private stack (its own state dir and free ports; the shared one is not touched),
    then the demo's run at once: what `cdcrouter demo` does the first time after `stack up`."""
    import gc
    import shutil

    from cdcrouter.demo.runner import DEMO_SERVICES, DemoOptions, run_demo
    from cdcrouter.stack.manager import Stack

    keys = ("postgres", "kafka", "kafka-controller", "registry", "registry-management")
    scratch = Path(tempfile.mkdtemp(prefix="cdcrouter-bench-cold-"))
    stack = Stack(scratch / "state", ports={k: _free_port() for k in keys})
    started = time.monotonic()
    notes: dict[str, str] = {}
    phases: dict[str, float] = {}  # the demo's steps: seconds from the end of `stack up`

    def step(text: str) -> None:
        phases[text.split()[0].rstrip(",")] = round(time.monotonic() - started - up_s, 2)

    def note(name: str, msg: str) -> None:
        if "warm" in msg:  # Kafka's start-up warm-up (cdcrouter.stack.warmup)
            notes[name] = msg

    try:
        stack.up(list(DEMO_SERVICES), report=note)
        up_s = time.monotonic() - started
        load = load_average()
        result = run_demo(
            DemoOptions(changes=changes, fused=mode == "fused", status=False), stack.connections(), step
        )
        phases["done"] = round(time.monotonic() - started - up_s, 2)
        lat = result.latencies_ms
        if not result.complete:
            raise CdcrouterError(
                f"cold demo ({mode}): the pipeline did not catch up", hint="see the log above"
            )
        require_all(f"cold demo ({mode})", sum(result.consumed.values()), sum(result.routed_out.values()), 0)
        tenth = max(1, len(lat) // 10)
        return {
            "mode": mode,
            "stack_up_s": round(up_s, 1),
            "kafka_warmup": notes.get("kafka"),
            "demo_phases_s": phases,
            "events": len(lat),
            "p50_ms": round(percentile(lat, 50) or 0, 1),
            "p99_ms": round(percentile(lat, 99) or 0, 1),
            "max_ms": round(max(lat), 1),
            "first_tenth_p99_ms": round(percentile(lat[:tenth], 99) or 0, 1),
            "last_tenth_p99_ms": round(percentile(lat[-tenth:], 99) or 0, 1),
            "load_1m_start": load,
        }
    finally:
        gc.unfreeze()  # the engines' Kafka clients go before their broker does
        gc.collect()
        stack.down(list(DEMO_SERVICES), purge=True)
        shutil.rmtree(scratch, ignore_errors=True)


def run_cold_demo(
    runs: int = 3, changes: int = 3000, modes: tuple[str, ...] = ("fused",), report: Any = None
) -> dict[str, Any]:
    """The demo on a just-started private stack, ``runs`` times per mode (each a new stack)."""

    def one_round() -> dict[str, Any]:
        out: dict[str, Any] = {"changes": changes}
        for mode in modes:
            out[mode] = _cold_demo_once(mode, changes)
            if report is not None:
                report(f"cold {mode}: {json.dumps(out[mode])}")
        return out

    return repeat(one_round, runs, report)


if __name__ == "__main__":  # python -m cdcrouter.bench.fused [runs] [seconds]
    from cdcrouter.config import load_connections

    args = sys.argv[1:]
    out = run_fused_bench(
        load_connections(),
        report=print,
        runs=int(args[0]) if args else 3,
        seconds=float(args[1]) if len(args) > 1 else 15.0,
        modes=tuple(args[2].split(",")) if len(args) > 2 else MODES,
    )
    print(json.dumps({k: v for k, v in out.items() if k not in ("rows", "each_run")}, indent=2))
