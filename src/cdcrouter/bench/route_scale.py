"""The router end to end at hundreds or thousands of filters (``cdcrouter bench route -n 1000``).

What it runs: ``cdcrouter run`` as shipped (exactly-once, its default lanes and commit policy) in a
process of its own, over :func:`~cdcrouter.bench.match.realistic_filters` (one consuming team per
filter, most events match 1-3 filters), each filter writing a single-partition topic of its own.
The raw topic is written first (``warmup + events`` events); the router stops by itself once it
has committed them all (``--max-events``).

How it counts: every output partition is read read_committed up to its last stable offset by one
consumer, and each topic's count must equal what the filters give when evaluated WITHOUT the index
(``compile_filterset(index=False)``, the matcher before the index): an independent oracle for the
indexed matcher the router uses. A missing or extra record fails the run.

Rate and CPU (as :mod:`cdcrouter.bench.flink` measures every engine): the window runs from the
CreateTime of the output record of rank ``E_w`` (the records the warm-up events produce) to the
last one; events/s = measured events / window; CPU = the router process's utime + stime (sampled
from ``/proc`` every 0.1 s) over the window, per event. Peak RSS: the router's, sampled likewise.

Transactions: the router runs with ``-v``, whose one DEBUG line per commit gives its events,
the filters (here: partitions) it touched, and where the milliseconds went (deliver, offsets,
commit); :func:`commit_profile` groups them by partitions touched.
"""

from __future__ import annotations

import array
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cdcrouter.bench.stats import MissingRecords, load_average, percentile

__all__ = ["ScaleRun", "commit_profile", "count_outputs", "run_scale"]

DISTINCT = 20_000  # distinct events, cycled with fresh uuids (as `bench match` cycles its events)
UUID_WIDTH = 12  # every uuid the same length, so it can be spliced into an encoded event


@dataclass
class ScaleRun:
    """One run's topics, files and what the oracle says each topic must hold."""

    prefix: str
    workdir: Path
    filters_path: Path
    raw_topic: str
    topics: list[str]  # the output topics, one per filter
    expected: dict[str, int] = field(default_factory=dict)  # topic -> records due
    expected_warmup: int = 0  # records the warm-up events produce (all topics)
    schema_id: int = 0

    @property
    def all_topics(self) -> list[str]:
        return [self.raw_topic, f"{self.raw_topic}.router.dlq", *self.topics]


def _prepare(conns: Any, filters: int, raw_partitions: int, report: Callable[[str], None]) -> ScaleRun:
    """Topics (raw: ``raw_partitions``; outputs: 1 partition each) and registered schemas."""
    from cdcrouter.bench.match import realistic_filters
    from cdcrouter.schemas.registry import RegistryClient, apply_schemas, desired_subjects, plan_schemas
    from cdcrouter.topics import TopicDefaults, admin_client, apply_topics, plan_topics, topics_for

    prefix = f"benchscale-{uuid.uuid4().hex[:8]}-"
    workdir = Path(tempfile.mkdtemp(prefix="cdcrouter-bench-scale-"))
    path = workdir / "filters.yaml"
    path.write_text(realistic_filters(filters, topic_prefix=prefix))
    raw = f"{prefix}raw"
    specs = topics_for(path, defaults=TopicDefaults(partitions=1), raw_topic=raw)
    specs = [replace(s, partitions=raw_partitions) if s.role == "raw" else s for s in specs]
    outputs = sorted(s.name for s in specs if s.role == "filtered")
    run = ScaleRun(prefix, workdir, path, raw, outputs)
    t0 = time.monotonic()
    admin = admin_client(conns.kafka.to_librdkafka())
    apply_topics(admin, plan_topics(admin, specs))
    report(f"{len(specs)} topics created in {time.monotonic() - t0:.1f} s")
    t0 = time.monotonic()
    with RegistryClient(conns.registry.to_client_conf()) as reg:  # what `schemas apply` does first
        ids = apply_schemas(reg, plan_schemas(reg, desired_subjects(raw, outputs)))
    run.schema_id = ids[f"{raw}-value"]
    report(f"{len(ids)} subjects registered in {time.monotonic() - t0:.1f} s")
    return run


def _write_events(conns: Any, run: ScaleRun, filters: int, warmup: int, events: int) -> None:
    """``warmup + events`` raw events: :data:`DISTINCT` realistic events cycled, each with its own
    uuid; the oracle's count per topic for them (the unindexed matcher, once per distinct event)."""
    from confluent_kafka import Producer

    from cdcrouter.backends.python_eval import compile_filterset
    from cdcrouter.bench.match import realistic_events
    from cdcrouter.filters import load_filters
    from cdcrouter.route.events import encode_raw, event_key

    fs = load_filters(run.filters_path)
    topic_of = {f.id: f.output_topic for f in fs.filters}
    oracle = compile_filterset(fs, index=False).match
    distinct = realistic_events(min(DISTINCT, warmup + events), filters)
    framed = []
    due: list[list[str]] = []
    for ev in distinct:
        ev["eventHeader"]["uuid"] = "0" * UUID_WIDTH
        value = encode_raw(ev, run.schema_id)
        # Confluent header (5 bytes), then eventHeader.uuid: its length varint (1 byte), its bytes
        framed.append((value[:6], value[6 + UUID_WIDTH :], event_key(ev)))
        due.append([topic_of[fid] for fid in oracle(ev)])
    expected = dict.fromkeys(run.topics, 0)
    producer = Producer(conns.kafka.producer_conf(**{"linger.ms": 20}))
    for j in range(warmup + events):
        head, tail, key = framed[j % len(framed)]
        topics = due[j % len(framed)]
        for t in topics:
            expected[t] += 1
        if j < warmup:
            run.expected_warmup += len(topics)
        value = head + f"{j:0{UUID_WIDTH}d}".encode() + tail
        while True:
            try:
                producer.produce(run.raw_topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError(f"the raw topic {run.raw_topic} was not fully written")
    run.expected = expected


def count_outputs(
    conns: Any, topics: list[str], timeout_s: float = 120.0
) -> tuple[dict[str, int], array.array]:
    """Per topic the committed records (read_committed, up to each partition's last stable offset,
    so transaction markers and aborted records are stepped over), and their CreateTime stamps.

    One consumer assigned to every partition at once: reading 1,000 topics one by one cost ~0.2 s
    each in the consumer's wait alone."""
    from confluent_kafka import Consumer, IsolationLevel, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    from cdcrouter.consumer._kafka import consumer_conf
    from cdcrouter.topics import admin_client

    admin = admin_client(conns.kafka.to_librdkafka())
    md = admin.list_topics(timeout=30).topics
    parts = [TopicPartition(t, p) for t in topics for p in md[t].partitions]
    futures = admin.list_offsets(
        {tp: OffsetSpec.latest() for tp in parts}, isolation_level=IsolationLevel.READ_COMMITTED
    )
    ends = {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}
    todo = {k: end for k, end in ends.items() if end > 0}
    counts = dict.fromkeys(topics, 0)
    stamps = array.array("q")
    consumer = Consumer(
        consumer_conf(conns, f"benchscale-read-{uuid.uuid4().hex[:8]}", **{"fetch.wait.max.ms": 10})
    )
    try:
        consumer.assign([TopicPartition(t, p, 0) for (t, p) in todo])
        deadline = time.monotonic() + timeout_s
        while todo:
            for msg in consumer.consume(10_000, 0.2):
                err = msg.error()
                if err is not None:
                    raise RuntimeError(f"reading {msg.topic()}: {err.str()}")
                if msg.offset() < ends[(msg.topic(), msg.partition())]:
                    counts[msg.topic()] += 1
                    stamps.append(msg.timestamp()[1])
            for tp in consumer.position([TopicPartition(t, p) for (t, p) in todo]):
                if tp.offset >= todo[(tp.topic, tp.partition)]:
                    del todo[(tp.topic, tp.partition)]
            if todo and time.monotonic() > deadline:
                raise RuntimeError(f"{len(todo)} output partitions not read to the end in {timeout_s:.0f} s")
    finally:
        consumer.close()
    return counts, stamps


_COMMIT_LINE = re.compile(
    r"committed (\d+) on \S+: filled ([\d.]+) ms, queued ([\d.]+) ms, commit ([\d.]+) ms \(offsets ([\d.]+)\)"
    r"(?:, delivered ([\d.]+) ms, (\d+) filters)?"
)


def commit_profile(log_text: str, bands: tuple[int, ...] = (0, 100, 300, 600, 900)) -> dict[str, Any]:
    """The router's per-commit DEBUG lines grouped by partitions touched (one filter = one
    single-partition topic here): transactions, events per transaction, and the p50/p99 of the
    deliver (the lane's flush before hand-off) and the commit (offsets + EndTxn) in ms."""
    rows = []
    for m in _COMMIT_LINE.finditer(log_text):
        if m.group(7) is None:
            continue
        rows.append((int(m.group(7)), int(m.group(1)), float(m.group(6)), float(m.group(4))))
    out: dict[str, Any] = {"transactions": len(rows)}
    edges = [*bands, 10**9]
    for lo, hi in itertools.pairwise(edges):
        mine = [r for r in rows if lo <= r[0] < hi]
        if not mine:
            continue
        label = f"{lo}-{hi - 1}" if hi < 10**9 else f"{lo}+"
        out[f"partitions_{label}"] = {
            "transactions": len(mine),
            "events_per_txn_p50": _p(percentile([r[1] for r in mine], 50)),
            "deliver_ms_p50_p99": [_p(percentile([r[2] for r in mine], q)) for q in (50, 99)],
            "commit_ms_p50_p99": [_p(percentile([r[3] for r in mine], q)) for q in (50, 99)],
        }
    return out


def _p(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _router(conns: Any, run: ScaleRun, total: int, lanes: int) -> tuple[subprocess.Popen[bytes], Path]:
    env = {
        **os.environ,
        "CDCROUTER_KAFKA__BOOTSTRAP_SERVERS": conns.kafka.bootstrap_servers,
        "CDCROUTER_REGISTRY__URL": conns.registry.url,
    }
    cmd = [sys.executable, "-m", "cdcrouter.cli.main", "run", "-v", "--filters", str(run.filters_path)]
    cmd += ["--raw-topic", run.raw_topic, "--group", f"{run.prefix}g", "--no-reload"]
    cmd += ["--instance-id", f"{run.prefix}0", "--lanes", str(lanes), "--max-events", str(total)]
    log_path = run.workdir / "router.log"
    with log_path.open("wb") as log:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log), log_path


def _route(
    conns: Any,
    run: ScaleRun,
    events: int,
    warmup: int,
    lanes: int,
    timeout_s: float,
    report: Callable[[str], None],
) -> dict[str, Any]:
    from cdcrouter.bench.flink import Sampler

    load = load_average()
    started = time.time_ns() // 1_000_000
    proc, log_path = _router(conns, run, warmup + events, lanes)
    sampler = Sampler({"router": proc.pid}).start()
    try:
        code = proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(30)
        code = None
    finally:
        sampler.stop()
    log_text = log_path.read_text(errors="replace")
    if code != 0:
        why = "did not finish in time" if code is None else f"exited with {code}"
        raise RuntimeError(f"the router {why}; its log ends:\n{log_text[-3000:]}")
    t0 = time.monotonic()
    counts, stamps = count_outputs(conns, run.topics)
    read_s = time.monotonic() - t0
    report(f"{len(stamps):,} output records counted in {read_s:.1f} s")
    wrong = {t: (counts[t], run.expected[t]) for t in run.topics if counts[t] != run.expected[t]}
    if wrong:
        missing = sum(max(0, want - got) for got, want in wrong.values())
        extra = sum(max(0, got - want) for got, want in wrong.values())
        if missing:
            raise MissingRecords("bench route (scale)", missing, sum(run.expected.values()), read_s)
        raise RuntimeError(f"{extra} records more than the oracle's, in {len(wrong)} topics (duplicates?)")
    ordered = sorted(stamps)
    t_warm = ordered[run.expected_warmup - 1] if run.expected_warmup else ordered[0]
    t_last = ordered[-1]
    seconds = (t_last - t_warm) / 1000
    cpu = _cpu_s(sampler, t_warm, t_last)
    samples = [s for _, per in sampler.samples if (s := per.get("router")) is not None]
    return {
        "events_per_s": round(events / seconds) if seconds > 0 else None,
        "events_per_cpu_s": round(events / cpu) if cpu > 0 else None,
        "router_cpu_us_per_event": round(cpu * 1e6 / events, 2),
        "cores_busy": round(cpu / seconds, 2) if seconds > 0 else None,
        "seconds": round(seconds, 3),
        "start_to_first_output_s": round((ordered[0] - started) / 1000, 2),
        "router_cpu_s_total": round((samples[-1] - samples[0]) / _ticks(), 2) if samples else None,
        "output_records": len(ordered),
        "peak_rss_mb": round(sampler.peak_rss.get("router", 0) / 2**20, 1),
        "load_1m": load,
        "load_1m_after": load_average(),
        "commits": commit_profile(log_text),
    }


def _ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _cpu_s(sampler: Any, start_ms: int, end_ms: int) -> float:
    """The router's CPU seconds over ``[start_ms, end_ms]``, from the samples that saw it alive."""
    alive = [(t, per["router"]) for t, per in sampler.samples if "router" in per]
    if not alive:
        return 0.0
    before = [ticks for t, ticks in alive if t <= start_ms] or [alive[0][1]]
    after = [ticks for t, ticks in alive if t >= end_ms] or [alive[-1][1]]
    return (after[0] - before[-1]) / _ticks()


def _drop(conns: Any, run: ScaleRun) -> None:
    """Delete the run's topics (2,002 at 1,000 filters: 0.1 s). Their subjects stay, as every other
    benchmark's do: deleting 1,001 subjects from Apicurio took 423 s here (registering them 12-25 s)."""
    from cdcrouter.topics import delete_topics

    delete_topics(conns, run.all_topics)
    shutil.rmtree(run.workdir, ignore_errors=True)


def run_scale(
    conns: Any,
    filters: int = 1000,
    events: int = 1_000_000,
    warmup: int = 200_000,
    raw_partitions: int = 3,
    lanes: int = 2,
    report: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """One run: fresh topics, the events written, the router process drains them, every topic
    counted against the oracle, everything deleted again."""
    run = _prepare(conns, filters, raw_partitions, report)
    try:
        t0 = time.monotonic()
        _write_events(conns, run, filters, warmup, events)
        report(f"{warmup + events:,} events written in {time.monotonic() - t0:.1f} s")
        result = _route(conns, run, events, warmup, lanes, 600 + (warmup + events) / 1000, report)
    finally:
        _drop(conns, run)
    due = sum(run.expected.values())
    return {
        "benchmark": "embedded router process end to end, realistic filters (bench/match.py)",
        "filters": filters,
        "output_topics": len(run.topics),
        "partitions_per_output_topic": 1,
        "raw_partitions": raw_partitions,
        "lanes": lanes,
        "events": events,
        "warmup_events": warmup,
        "records_per_event": round(due / (warmup + events), 2),
        "expected_records": due,
        "oracle": "compile_filterset(index=False), per topic",
        **result,
    }
