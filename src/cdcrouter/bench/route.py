"""Benchmarks of the embedded engine, importable so the Flink side-by-side can reuse them.

- :func:`throughput`: N seed-shaped events are written to a fresh raw topic first, then one
  in-process :class:`Router` drains them; events/s = N / (first record consumed -> last commit).
- :func:`latency`: a router runs in its own process while this one appends events at a fixed rate
  (``savedDate`` = the wall clock just before the append) and reads every filtered topic
  read_committed; latency = time the record became visible here - ``savedDate``. Every record the
  filters route (counted per event with the compiled filters) must become visible: a missing one
  fails the run (:class:`~cdcrouter.bench.stats.MissingRecords`) instead of leaving the sample out.

Every run uses unique topic, group and transactional names, so it can share a stack with tests.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from cdcrouter.bench.stats import MissingRecords, peak_rss_mb, percentile, reset_peak_rss
from cdcrouter.capture.avro_fast import encode_long
from cdcrouter.route.events import bench_filters_yaml, encode_raw, event_key, make_event
from cdcrouter.route.wire import header

__all__ = [
    "BenchSetup",
    "Visible",
    "append_now",
    "append_paced",
    "event_uuid",
    "latency",
    "produce_events",
    "read_filtered",
    "setup",
    "throughput",
]


@dataclass
class BenchSetup:
    prefix: str
    raw_topic: str
    filters_path: Path
    raw_schema_id: int
    filtered_topics: list[str]
    all_topics: list[str] = field(default_factory=list)
    scratch: Path | None = None  # a temp dir setup() made itself: teardown() removes it
    writer_schema: dict[str, Any] | None = None  # an evolved raw schema the events are written with
    matcher: Any = None  # the filters compiled in this process: how many records each event is due

    def routed_records(self, event: dict[str, Any]) -> int:
        """How many filtered records ``event`` is due (one per matching filter)."""
        if self.matcher is None:
            from cdcrouter.backends.python_eval import compile_filterset
            from cdcrouter.filters import load_filters

            self.matcher = compile_filterset(load_filters(self.filters_path))
        return len(self.matcher.match(event))


def evolved_raw_schema() -> dict[str, Any]:
    """The contract plus what a compatible evolution typically adds: an optional
    ``eventHeader.traceId`` (in the middle of the header) and an optional ``sourceMetadata.txId``."""
    from cdcrouter.schemas import raw_schema

    schema = raw_schema()
    schema["fields"][0]["type"]["fields"].insert(
        2, {"name": "traceId", "type": ["null", "string"], "default": None}
    )
    schema["fields"][2]["type"]["fields"].append({"name": "txId", "type": ["null", "long"], "default": None})
    return schema


def evolved_event(event: dict[str, Any], i: int) -> dict[str, Any]:
    """``event`` with the evolved schema's fields set (a 32-hex trace id, a transaction id)."""
    event["eventHeader"]["traceId"] = f"{i:032x}"
    event["sourceMetadata"]["txId"] = 700_000 + i // 3
    return event


def setup(
    conns: Any,
    filters: int = 20,
    prefix: str | None = None,
    workdir: Path | None = None,
    partitions: int = 3,
    evolved: bool = False,
) -> BenchSetup:
    """Fresh raw + filtered topics and registered schemas for one run; with ``evolved``, the raw
    subject's version 2 is :func:`evolved_raw_schema` and the events are written with it."""
    from cdcrouter.schemas.registry import (
        RegistryClient,
        SchemaPlan,
        apply_schemas,
        desired_subjects,
        ensure_schema,
        plan_derived,
        plan_schemas,
    )
    from cdcrouter.topics import TopicDefaults, admin_client, apply_topics, plan_topics, topics_for

    prefix = prefix or f"bench-{uuid.uuid4().hex[:8]}-"
    scratch = None if workdir else Path(tempfile.mkdtemp(prefix="cdcrouter-bench-"))
    workdir = workdir or scratch
    assert workdir is not None
    path = workdir / "filters.yaml"
    path.write_text(bench_filters_yaml(prefix, filters))
    raw = f"{prefix}raw"
    specs = topics_for(path, defaults=TopicDefaults(partitions=partitions), raw_topic=raw)
    admin = admin_client(conns.kafka.to_librdkafka())
    apply_topics(admin, plan_topics(admin, specs))
    filtered = sorted(s.name for s in specs if s.role == "filtered")
    writer = evolved_raw_schema() if evolved else None
    with RegistryClient(conns.registry.to_client_conf()) as reg:
        ids = apply_schemas(reg, plan_schemas(reg, desired_subjects(raw, filtered)))
        raw_id = ids[f"{raw}-value"] if writer is None else ensure_schema(reg, f"{raw}-value", writer)
        if writer is not None:
            # what `schemas apply` (or the router, when it meets the writer schema) registers, done
            # here so the run measures routing, not the one-off registration (~0.2 s, 20 subjects)
            plan = SchemaPlan()
            plan_derived(reg, plan, raw, filtered)
            apply_schemas(reg, plan)
    return BenchSetup(prefix, raw, path, raw_id, filtered, [s.name for s in specs], scratch, writer)


def teardown(conns: Any, s: BenchSetup) -> None:
    """Delete a run's topics, so repeated benchmarks do not pile partitions up on the broker."""
    from cdcrouter.topics import delete_topics

    delete_topics(conns, s.all_topics)
    if s.scratch is not None:
        shutil.rmtree(s.scratch, ignore_errors=True)


def produce_events(
    conns: Any,
    topic: str,
    schema_id: int,
    n: int,
    seed: int = 7,
    start: int = 0,
    writer: dict[str, Any] | None = None,
) -> None:
    """Append events ``start..start+n-1`` (idempotent producer, batched); written with ``writer``
    (an evolved raw schema, its fields set by :func:`evolved_event`) when given."""
    import io

    import fastavro

    parsed = fastavro.parse_schema(writer) if writer is not None else None
    producer = Producer(conns.kafka.producer_conf(**{"linger.ms": 20}))
    for i in range(start, start + n):
        event = make_event(i, seed)
        if parsed is None:
            value = encode_raw(event, schema_id)
        else:
            buf = io.BytesIO(header(schema_id))
            buf.seek(0, 2)
            fastavro.schemaless_writer(buf, parsed, evolved_event(event, i))
            value = buf.getvalue()
        while True:
            try:
                producer.produce(topic, value, event_key(event))
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)


def throughput(
    conns: Any, events: int = 200_000, filters: int = 20, lanes: int = 2, evolved: bool = False
) -> dict[str, Any]:
    """Drain ``events`` pre-written events with one in-process router; ``evolved``: the events are
    written with :func:`evolved_raw_schema` (the pass-through of an evolved writer schema)."""

    s = setup(conns, filters, evolved=evolved)
    try:
        return _throughput(conns, s, events, filters, lanes)
    finally:
        teardown(conns, s)


def _throughput(conns: Any, s: BenchSetup, events: int, filters: int, lanes: int = 2) -> dict[str, Any]:
    from cdcrouter.route.engine import Router, RouterOptions

    produce_events(conns, s.raw_topic, s.raw_schema_id, events, writer=s.writer_schema)
    # "On one core": the router and every librdkafka thread it starts (they inherit the calling
    # thread's affinity) share one CPU; the broker and the rest of the machine keep the others.
    allowed = os.sched_getaffinity(0)
    core = max(allowed) if len(allowed) > 1 else None
    if core is not None:
        os.sched_setaffinity(0, {core})
    try:
        router = Router(
            s.filters_path,
            conns,
            RouterOptions(raw_topic=s.raw_topic, group_id=f"{s.prefix}g", reload=False, lanes=lanes),
        )
        reset_peak_rss()  # the router's peak, not the event writer's before it
        cpu0 = time.process_time()
        stats = router.run(max_events=events, idle_timeout_s=30)
        cpu = time.process_time() - cpu0
        rss = peak_rss_mb()
    finally:
        os.sched_setaffinity(0, allowed)
    routed = sum(stats.matched.values())
    return {
        "benchmark": "embedded throughput",
        "writer_schema": "evolved" if s.writer_schema is not None else "base",
        "events": stats.consumed,
        "filters": filters,
        "lanes": lanes,
        "routed_records": routed,
        "transactions": stats.transactions,
        "seconds": round(stats.active_seconds, 3),
        "events_per_s": round(stats.consumed / stats.active_seconds) if stats.active_seconds else 0,
        "pinned_to_core": core,
        "process_cpu_s": round(cpu, 2),
        "events_per_cpu_s": round(stats.consumed / cpu) if cpu else 0,
        "cpu_cores_used": round(cpu / stats.seconds, 2) if stats.seconds else 0,
        "peak_rss_mb": rss,  # this process: the router, its Kafka clients and the bench around them
    }


@dataclass
class Visible:
    """What the reader saw: per record, append -> visible and append -> routed (ms), and the uuid of
    the event it carries.

    Routed is ``filterMetadata.filteredAt``, the router's clock when it routed the batch, so each
    latency splits into the way to the router and the transaction, commit and fetch after it.
    ``expected`` (event uuid -> records due) is the measured window: only its records are samples,
    and :meth:`wait_complete` fails the run unless every one of them became visible."""

    samples: list[tuple[int, int, bytes]] = field(default_factory=list)
    seen: int = 0
    expected: dict[bytes, int] = field(default_factory=dict)

    def clear(self) -> None:
        self.samples = []  # one rebinding: the reader thread appends to whichever list is current

    def expect(self, event_uuid: bytes, records: int) -> None:
        if records:
            self.expected[event_uuid] = records

    def measured(self) -> list[tuple[int, int, bytes]]:
        """The samples of the measured window (all of them when no window was set)."""
        if not self.expected:
            return list(self.samples)
        return [s for s in self.samples if s[2] in self.expected]

    def missing(self) -> int:
        """Records of the measured window not visible (yet)."""
        got = Counter(key for _, _, key in self.samples if key in self.expected)
        return sum(max(0, due - got[key]) for key, due in self.expected.items())

    def wait_complete(self, what: str, timeout_s: float) -> None:
        """Wait (bounded) until every expected record is visible; else :class:`MissingRecords`."""
        started = time.monotonic()
        while (missing := self.missing()) and time.monotonic() - started < timeout_s:
            time.sleep(0.2)
        if missing:
            raise MissingRecords(what, missing, sum(self.expected.values()), time.monotonic() - started)

    def summary(self) -> dict[str, Any]:
        samples = self.measured()
        total = sorted(t for t, _, _ in samples)
        routed = sorted(r for _, r, _ in samples)
        after = sorted(t - r for t, r, _ in samples)
        return {
            "expected_records": sum(self.expected.values()) if self.expected else None,
            "visible_records": len(total),
            "p50_ms": _ms(percentile(total, 50)),
            "p99_ms": _ms(percentile(total, 99)),
            "max_ms": total[-1] if total else None,
            "mean_ms": round(statistics.fmean(total), 1) if total else None,
            "append_to_routed_p50_p99_ms": [_ms(percentile(routed, 50)), _ms(percentile(routed, 99))],
            "routed_to_visible_p50_p99_ms": [_ms(percentile(after, 50)), _ms(percentile(after, 99))],
        }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def event_uuid(value: bytes) -> bytes:
    """``eventHeader.uuid`` of a framed raw or filtered record (its first field), undecoded."""
    length, pos = _read_long(value, 5)
    return value[pos : pos + length]


def _read_long(value: bytes, pos: int) -> tuple[int, int]:
    """The Avro long (zig-zag varint) at ``pos`` and the position after it."""
    n = shift = 0
    while True:
        b = value[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return (n >> 1) ^ -(n & 1), pos


def saved_date(value: bytes) -> int:
    """``eventHeader.savedDate`` of a framed raw or filtered record without decoding the rest.

    Keeps the reader cheap, so the measuring process does not slow down what it measures."""
    start, end = _saved_date_span(value)
    return _zigzag(value[start:end])


def _zigzag(varint: bytes) -> int:
    """The long an Avro zig-zag varint (exactly its bytes) encodes."""
    n = 0
    for shift, b in enumerate(varint):
        n |= (b & 0x7F) << (7 * shift)
    return (n >> 1) ^ -(n & 1)


def filtered_at(value: bytes) -> int:
    """``filterMetadata.filteredAt`` of a filtered record: its last field, so the value's last
    varint (epoch milliseconds take 6 bytes until 2039; read backwards to the previous stop byte)."""
    start = len(value) - 1
    while start > 0 and value[start - 1] & 0x80:
        start -= 1
    return _zigzag(value[start:])


def read_filtered(conns: Any, topics: list[str], group: str, out: Visible, stop: threading.Event) -> None:
    consumer = Consumer(
        {
            **conns.kafka.to_librdkafka(),
            "group.id": group,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
        }
    )
    consumer.subscribe(topics)
    try:
        while not stop.is_set():
            # consume(n, t) returns only when it has n records or t is up: a long t would add up
            # to t to every latency measured here, so poll with a short one.
            for msg in consumer.consume(500, 0.002):
                if msg.error() is not None:
                    continue
                now_ms = time.time_ns() // 1_000_000
                value = msg.value()
                saved = saved_date(value)
                out.samples.append((now_ms - saved, filtered_at(value) - saved, event_uuid(value)))
                out.seen += 1
    finally:
        consumer.close()


def _router_process(
    conns: Any, s: BenchSetup, instance: str = "0", lanes: int = 2
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CDCROUTER_KAFKA__BOOTSTRAP_SERVERS": conns.kafka.bootstrap_servers,
        "CDCROUTER_REGISTRY__URL": conns.registry.url,
    }
    cmd = [sys.executable, "-m", "cdcrouter.cli.main", "run", "--filters", str(s.filters_path)]
    cmd += ["--raw-topic", s.raw_topic, "--group", f"{s.prefix}g", "--no-reload", "--instance-id", instance]
    cmd += ["--lanes", str(lanes)]
    # beside the run's filters file: the run's directory, which teardown (or its owner) removes
    with router_log(s, instance).open("ab") as log:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)


def router_log(s: BenchSetup, instance: str = "0") -> Path:
    return s.filters_path.parent / f"router-{instance}.log"


def latency(
    conns: Any,
    rate: int = 5_000,
    seconds: float = 20.0,
    filters: int = 20,
    lanes: int = 2,
    partitions: int = 3,
    tail_timeout_s: float = 30.0,
) -> dict[str, Any]:
    """Append at ``rate`` events/s for ``seconds`` and measure append -> visible (read_committed).
    ``partitions``: of the raw and every filtered topic (the seed's topics have 3).

    Raises:
        MissingRecords: a routed record was not visible ``tail_timeout_s`` after the last append.
    """
    s = setup(conns, filters, partitions=partitions)
    try:
        result = _latency(conns, s, rate, seconds, filters, lanes, tail_timeout_s)
        return {**result, "partitions_per_topic": partitions}
    finally:
        teardown(conns, s)


def _latency(
    conns: Any,
    s: BenchSetup,
    rate: int,
    seconds: float,
    filters: int,
    lanes: int = 2,
    tail_timeout_s: float = 30.0,
) -> dict[str, Any]:
    router = _router_process(conns, s, lanes=lanes)
    seen = Visible()
    stop = threading.Event()
    reader = threading.Thread(
        target=read_filtered, args=(conns, s.filtered_topics, f"{s.prefix}reader", seen, stop), daemon=True
    )
    reader.start()
    producer = latency_writer(conns)
    try:
        # warm-up: wait until the router routes and the reader sees it (start-up is not latency)
        deadline = time.monotonic() + 60
        i = 0
        while seen.seen == 0:
            if router.poll() is not None or time.monotonic() > deadline:
                tail = router_log(s).read_text(errors="replace")[-2000:]
                raise RuntimeError(f"router did not start (exit {router.poll()}); its log ends:\n{tail}")
            for _ in range(50):
                append_now(producer, s, i)
                i += 1
            producer.flush(5)
            time.sleep(0.2)
        # then the measured rate for a few seconds first: the step from a trickle to full rate
        # (transaction sizes settling, the broker's first writes to each partition) is not latency
        i, _, _ = append_paced(producer, s, rate, WARMUP_S, i)
        time.sleep(0.5)
        seen.clear()
        i, sent, send_s = append_paced(producer, s, rate, seconds, i, expect=seen)
        producer.flush(10)
        seen.wait_complete("bench route latency", tail_timeout_s)  # every routed record, or an error
        rss = peak_rss_mb(router.pid)  # read while the router still runs
    finally:
        stop.set()
        router.terminate()
        try:
            router.wait(30)
        except subprocess.TimeoutExpired:
            router.kill()
        reader.join(10)
    return {
        "benchmark": "embedded latency (raw append -> visible read_committed)",
        "rate_target": rate,
        "rate_achieved": round(sent / send_s),
        "filters": filters,
        "lanes": lanes,
        **seen.summary(),
        "peak_rss_mb": rss,
    }


WARMUP_S = 3.0


def latency_writer(conns: Any) -> Producer:
    """The latency runs' raw-topic writer, batching like the capture's producer (``linger.ms`` 5).

    Without linger nearly every append was a produce request of its own: 17% more produce requests
    in one paired run, for a broker that shares the machine's two cores with everything measured."""
    return Producer(conns.kafka.producer_conf(**{"linger.ms": 5}))  # as capture.sink.TransactionalSink


def append_paced(
    producer: Producer, s: BenchSetup, rate: int, seconds: float, i: int, expect: Visible | None = None
) -> tuple[int, int, float]:
    """Append ``rate`` events/s for ``seconds``: the next event number, how many were sent, and the
    seconds sending took. With ``expect``, each event's due records are registered there first.

    The events are encoded before the clock starts and only ``savedDate`` is written at append
    time (epoch milliseconds take 6 varint bytes until 2039, so its slot never moves). Building
    and encoding an event in Python costs ~26 us: about an eighth of a core at 5,000/s, taken
    from the broker and the router on a 2-core machine."""
    total = int(rate * seconds)
    framed = [_with_saved_date_slot(s, n, expect) for n in range(i, i + total)]
    started = time.monotonic()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - started) * rate))
        while sent < due:
            head, tail, key = framed[sent]
            producer.produce(s.raw_topic, head + encode_long(time.time_ns() // 1_000_000) + tail, key)
            sent += 1
        producer.poll(0)
        time.sleep(0.001)
    return i + total, sent, time.monotonic() - started


def _with_saved_date_slot(s: BenchSetup, i: int, expect: Visible | None = None) -> tuple[bytes, bytes, bytes]:
    """Event ``i`` framed and encoded, split around its ``savedDate`` varint."""
    event = make_event(i, seed=11)
    event["eventHeader"]["savedDate"] = time.time_ns() // 1_000_000  # same varint length as later
    if expect is not None:
        expect.expect(event["eventHeader"]["uuid"].encode(), s.routed_records(event))
    value = encode_raw(event, s.raw_schema_id)
    start, end = _saved_date_span(value)
    return value[:start], value[end:], event_key(event)


def _saved_date_span(value: bytes) -> tuple[int, int]:
    """Byte span of ``eventHeader.savedDate`` in a framed record (Confluent header, then the
    eventHeader: uuid and eventName strings, createdDate and savedDate longs; a string is a
    zig-zag varint length plus bytes)."""
    pos = 5
    for field_no in range(4):
        begin = pos
        n, pos = _read_long(value, pos)
        if field_no < 2:
            pos += n
        elif field_no == 3:
            return begin, pos
    raise AssertionError("unreachable")


def _committed(conns: Any, topic: str, group: str) -> int:
    from confluent_kafka import TopicPartition

    c = Consumer({**conns.kafka.to_librdkafka(), "group.id": group, "enable.auto.commit": False})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            max(tp.offset, 0) for tp in c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        )
    finally:
        c.close()


def throughput_processes(
    conns: Any, events: int = 200_000, filters: int = 20, instances: int = 2, partitions: int = 6
) -> dict[str, Any]:
    """``instances`` router processes in one group drain ``events`` pre-written events.

    The rate is taken between the first and the last committed offset the group reports (polled
    every 20 ms), so process start-up is not counted.
    """
    s = setup(conns, filters, partitions=partitions)
    try:
        return _throughput_processes(conns, s, events, filters, instances, partitions)
    finally:
        teardown(conns, s)


def _throughput_processes(
    conns: Any, s: BenchSetup, events: int, filters: int, instances: int, partitions: int
) -> dict[str, Any]:
    produce_events(conns, s.raw_topic, s.raw_schema_id, events)
    group = f"{s.prefix}g"
    procs = [_router_process(conns, s, str(k)) for k in range(instances)]
    try:
        deadline = time.monotonic() + 600
        first_at, first_n = None, 0
        while True:
            n = _committed(conns, s.raw_topic, group)
            now = time.monotonic()
            if first_at is None and n > 0:
                first_at, first_n = now, n
            if n >= events:
                break
            if now > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"routers stopped or stalled at {n}/{events} committed")
            time.sleep(0.02)
        rss = [peak_rss_mb(p.pid) for p in procs]  # read while they still run
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    assert first_at is not None
    seconds = now - first_at
    return {
        "benchmark": f"embedded throughput, {instances} router processes in one group",
        "events": events,
        "filters": filters,
        "raw_partitions": partitions,
        "seconds": round(seconds, 3),
        "events_per_s": round((events - first_n) / seconds) if seconds else 0,
        "peak_rss_mb": max((r for r in rss if r is not None), default=None),  # the largest router
    }


def append_now(producer: Producer, s: BenchSetup, i: int) -> None:
    event = make_event(i, seed=11)
    event["eventHeader"]["savedDate"] = time.time_ns() // 1_000_000
    producer.produce(s.raw_topic, encode_raw(event, s.raw_schema_id), event_key(event))
