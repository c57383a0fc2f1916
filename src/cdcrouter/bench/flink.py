"""The Flink anchor, set up the way Flink's users run it, beside the embedded router
(``cdcrouter bench flink``).

Same raw events, same filters, same machine, same run (see docs/routing.md, "Flink anchor"):

- **Flink**: a private session cluster sized by Flink's own memory guide (:func:`fair_flink_config`),
  parallelism = the machine's cores, a raw topic with as many partitions. At-least-once and
  exactly-once are separate rows with the same checkpoint interval.
- **Ours**: ``cdcrouter run`` as shipped (exactly-once, its default lanes and commit interval), in a
  process of its own.

Every row reads the same pre-written raw topic from its start with a consumer group of its own,
and writes topics of its own. The first ``warmup`` events warm the engine up; the next ``events``
are measured. Counting reads the output topics read_committed (:func:`read_range`, which steps
over transaction markers and aborted records), never engine counters, and each topic's count
must equal what :func:`compile_filterset` computed for the same events, or the row fails.

Rate: ``events / (T_last - T_warm)`` where the T are the CreateTime stamps the engine's own
producer put on its output records (this host's clock), ``T_last`` the latest, and ``T_warm`` the
one of rank ``E_w`` in time order, ``E_w`` being the number of output records the warm-up events
produce. Exactly-once output becomes readable only at a commit: ``visible_lag_s`` is how much
later than ``T_last`` the last record could be read (polled every ~0.1 s).

CPU and memory: ``/proc`` of the engine's processes (Flink: JobManager + TaskManager JVMs; ours:
the router process) sampled every 0.1 s; CPU seconds between ``T_warm`` and ``T_last`` per
measured event, and the peak RSS seen during the row.

Latency (``--latency``): a deployed job (ours: a ``cdcrouter run`` process; Flink: the statement
set on the same private cluster, each guarantee) while events are appended at a fixed rate with
``savedDate`` = the wall clock; latency = when the record became visible to a read_committed
consumer - ``savedDate``. Flink's exactly-once sink makes records visible at checkpoints, so its
latency follows the checkpoint interval.
"""

from __future__ import annotations

import array
import bisect
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdcrouter.deploy.flink_target import FlinkDeployment, FlinkOptions

TICKS = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 300.0


# ---- the Flink cluster ----------------------------------------------------------------------------


def fair_flink_config(cores: int) -> dict[str, Any]:
    """Overrides of the stack's small Flink defaults, by Flink's memory setup and tuning guides.

    - One TaskManager with one slot per core, ``parallelism.default`` = cores (Flink's advice: as
      many slots as CPU cores).
    - ``taskmanager.memory.flink.size`` 4 GB: the guide's choice for a standalone cluster is to
      size total Flink memory. 4 GB of this 24 GB box: the JVMs then take ~6.5 GB with the
      JobManager and gateway, leaving Kafka's page cache, PostgreSQL and our process the rest.
    - Managed memory 0: the guide's advice for a stateless job or a heap state backend (ours is
      a filter + projection, no state but the source offsets), so the 4 GB go to heap and network.
    - Network memory, JVM metaspace and overhead: Flink's defaults (network 10% of Flink memory,
      64 MB..1 GB, i.e. ~410 MB; metaspace 256 MB; overhead 10%, 192 MB..1 GB).
    - JobManager: ``jobmanager.memory.process.size`` 1600m, Flink's own shipped default.
    - ``pipeline.object-reuse: true``: without it a record fanned out to N chained filters is
      deep-copied N times. The job is SQL only (no user functions keep references), so reuse is
      safe; measured here it cut the TaskManager's CPU per event from ~170 to ~132 µs (20 filters).
    """
    return {
        "taskmanager.numberOfTaskSlots": cores,
        "parallelism.default": cores,
        "taskmanager.memory.process.size": None,
        "taskmanager.memory.flink.size": "4096m",
        "taskmanager.memory.managed.size": "0m",
        "taskmanager.memory.network.min": None,
        "taskmanager.memory.network.max": None,
        "taskmanager.memory.jvm-metaspace.size": None,
        "taskmanager.memory.jvm-overhead.min": None,
        "jobmanager.memory.process.size": "1600m",
        "jobmanager.memory.jvm-metaspace.size": None,
        "jobmanager.memory.jvm-overhead.min": None,
        "jobmanager.memory.off-heap.size": None,
        "pipeline.object-reuse": "true",
        # the stack's gateway has a 192 MB heap: planning 100 filters timed out (120 s) under load
        "env.java.opts.sql-gateway": "-Xmx1024m -Xms256m -XX:MaxMetaspaceSize=256m",
    }


@dataclass
class FlinkCluster:
    gateway_url: str
    rest_url: str
    pids: dict[str, int]  # flink-jobmanager / flink-taskmanager -> JVM pid
    config: dict[str, Any]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def private_flink(cores: int) -> Iterator[FlinkCluster]:
    """A Flink session cluster of the benchmark's own (free ports, its own state dir), stopped by
    its PIDs and deleted at the end; the shared stack's Flink is not touched."""
    from cdcrouter.stack.flink import OVERRIDES_FILE
    from cdcrouter.stack.manager import Stack

    scratch = Path(tempfile.mkdtemp(prefix="cdcrouter-bench-flink-"))
    ports = {k: _free_port() for k in ("flink-rest", "flink-rpc", "sql-gateway")}
    config = fair_flink_config(cores)
    (scratch / "state" / "flink").mkdir(parents=True)
    (scratch / "state" / "flink" / OVERRIDES_FILE).write_text(json.dumps(config))
    stack = Stack(scratch / "state", ports=ports)
    names = ["flink-jobmanager", "flink-taskmanager", "sql-gateway"]
    for name in names:  # a loaded 2-core machine took more than the stack's 90 s to start a 4 GB TaskManager
        stack.services[name].start_timeout = START_TIMEOUT_S  # type: ignore[misc]
    try:
        stack.up(names)
        pids = {n: _jvm_pid(stack.record(n).pid) for n in names[:2]}  # type: ignore[union-attr]
        settle(pids)
        yield FlinkCluster(
            f"http://127.0.0.1:{ports['sql-gateway']}",
            f"http://127.0.0.1:{ports['flink-rest']}",
            pids,
            config,
        )
    finally:
        with contextlib.suppress(Exception):
            stack.down(names, purge=True)
        shutil.rmtree(scratch, ignore_errors=True)


def settle(pids: dict[str, int], idle_cores: float = 0.15, timeout_s: float = 120.0) -> float:
    """Wait until the just-started JVMs are idle (under ``idle_cores`` over a second), bounded:
    "ready" comes seconds before their start-up work (class loading, JIT) ends, and that work
    took ~0.9 of the 2 cores from the first row measured after it. Returns the seconds waited."""
    started = time.monotonic()
    before = sum((_proc_sample(p) or (0, 0))[0] for p in pids.values())
    while time.monotonic() - started < timeout_s:
        time.sleep(1.0)
        now = sum((_proc_sample(p) or (0, 0))[0] for p in pids.values())
        if (now - before) / TICKS < idle_cores:
            break
        before = now
    return time.monotonic() - started


def _jvm_pid(pid: int) -> int:
    """The java process: the start script may exec it (same pid) or run it as a child."""
    for _ in range(3):
        if Path(f"/proc/{pid}/comm").read_text().strip() == "java":
            return pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if not children:
            break
        pid = int(children[0])
    return pid


# ---- the workload ---------------------------------------------------------------------------------


@dataclass
class Workload:
    """A pre-written raw topic and what every engine must write for it, per filter id."""

    raw_topic: str
    schema_id: int
    warmup: int
    events: int
    filters_yaml: Callable[[str], str]  # topic prefix -> filters.yaml text
    expected: dict[str, int]  # filter id -> output records over all events
    expected_warmup: int  # output records of the warm-up events (all filters)
    partitions: int

    @property
    def total(self) -> int:
        return self.warmup + self.events

    @property
    def expected_total(self) -> int:
        return sum(self.expected.values())


def write_workload(
    conns: Any, filters_yaml: Callable[[str], str], warmup: int, events: int, partitions: int
) -> Workload:
    """A fresh raw topic with ``warmup + events`` seed-shaped events; the expected output counts
    come from the embedded matcher (:func:`compile_filterset`) over the same event dicts."""
    from confluent_kafka import Producer

    from cdcrouter.backends.python_eval import compile_filterset
    from cdcrouter.filters import load_filters_text
    from cdcrouter.route.events import encode_raw, event_key, make_event
    from cdcrouter.schemas.registry import RegistryClient, apply_schemas, desired_subjects, plan_schemas
    from cdcrouter.topics import TopicDefaults, admin_client, apply_topics, plan_topics, topics_for

    raw = f"benchanchor-{uuid.uuid4().hex[:8]}-raw"
    path = Path(tempfile.mkdtemp(prefix="cdcrouter-anchor-")) / "filters.yaml"
    try:
        path.write_text(filters_yaml("unused-"))
        specs = [s for s in topics_for(path, defaults=TopicDefaults(partitions=partitions), raw_topic=raw)]
        admin = admin_client(conns.kafka.to_librdkafka())
        apply_topics(admin, plan_topics(admin, [s for s in specs if s.name.startswith(raw)]))  # + its DLQ
        match = compile_filterset(load_filters_text(path.read_text(), "filters.yaml")).match
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
    with RegistryClient(conns.registry.to_client_conf()) as reg:
        schema_id = apply_schemas(reg, plan_schemas(reg, desired_subjects(raw, [])))[f"{raw}-value"]
    expected: dict[str, int] = {}
    expected_warmup = 0
    producer = Producer(conns.kafka.producer_conf(**{"linger.ms": 20}))
    for i in range(warmup + events):
        event = make_event(i)
        ids = match(event)
        for fid in ids:
            expected[fid] = expected.get(fid, 0) + 1
        if i < warmup:
            expected_warmup += len(ids)
        value, key = encode_raw(event, schema_id), event_key(event)
        while True:
            try:
                producer.produce(raw, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError(f"the raw topic {raw} was not fully written")
    return Workload(raw, schema_id, warmup, events, filters_yaml, expected, expected_warmup, partitions)


def drop_workload(conns: Any, wl: Workload) -> None:
    from cdcrouter.topics import delete_topics

    delete_topics(conns, [wl.raw_topic, f"{wl.raw_topic}.router.dlq"])


# ---- measuring ------------------------------------------------------------------------------------


@dataclass
class Sampler:
    """CPU ticks and RSS of some processes every ``period`` s, with the wall clock (ms)."""

    pids: dict[str, int]
    period: float = 0.1
    samples: list[tuple[int, dict[str, int]]] = field(default_factory=list)  # (wall ms, ticks by name)
    peak_rss: dict[str, int] = field(default_factory=dict)  # name -> bytes
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            per: dict[str, int] = {}
            for name, pid in self.pids.items():
                got = _proc_sample(pid)
                if got is None:
                    continue
                per[name] = got[0]
                self.peak_rss[name] = max(self.peak_rss.get(name, 0), got[1])
            self.samples.append((time.time_ns() // 1_000_000, per))
            self._stop.wait(self.period)

    def cpu_seconds(self, start_ms: int, end_ms: int) -> dict[str, float]:
        """Per process, CPU between the last sample at or before ``start_ms`` and the first at or
        after ``end_ms`` (so never less than the window's)."""
        if not self.samples:
            return {}
        times = [t for t, _ in self.samples]
        i = max(bisect.bisect_right(times, start_ms) - 1, 0)
        j = min(bisect.bisect_left(times, end_ms), len(times) - 1)
        a, b = self.samples[i][1], self.samples[j][1]
        return {name: (b[name] - a.get(name, 0)) / TICKS for name in b}


def _proc_sample(pid: int) -> tuple[int, int] | None:
    """(utime + stime ticks, VmRSS bytes) of ``pid``, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    rss = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return int(fields[11]) + int(fields[12]), rss


def _not_known_yet(exc: Exception) -> bool:
    """A topic made a moment ago whose partitions or leaders the client's metadata does not have
    yet (``NOT_LEADER_FOR_PARTITION`` after creating 100 topics at once, 2026-12-07): wait, not fail."""
    from confluent_kafka import KafkaError

    codes = {
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TIMED_OUT,  # the client waiting for that metadata
    }
    err = exc.args[0] if exc.args else None
    return isinstance(err, KafkaError) and err.code() in codes


def _lso_total(consumer: Any, topics: list[str], partitions: int) -> int:
    from cdcrouter.consumer._kafka import stable_bounds

    parts = list(range(partitions))  # a short timeout: this is polled, and a miss is retried
    return sum(end for t in topics for _, end in stable_bounds(consumer, t, parts, timeout=2.0).values())


def read_outputs(conns: Any, topics: list[str], partitions: int) -> tuple[dict[str, int], array.array]:
    """Per topic the number of committed records, and all their CreateTime stamps (ms)."""
    from confluent_kafka import Consumer

    from cdcrouter.consumer._kafka import consumer_conf, read_range, stable_bounds

    counts: dict[str, int] = {}
    stamps = array.array("q")
    consumer = Consumer(consumer_conf(conns, f"benchanchor-read-{uuid.uuid4().hex[:8]}"))
    try:
        for topic in topics:
            n = 0
            bounds = stable_bounds(consumer, topic, list(range(partitions)))
            for msg in read_range(consumer, topic, bounds):
                stamps.append(msg.timestamp()[1])
                n += 1
            counts[topic] = n
    finally:
        consumer.close()
    return counts, stamps


def wait_complete(
    conns: Any,
    topics: list[str],
    partitions: int,
    expected: dict[str, int],
    settle_s: float,
    timeout_s: float,
    alive: Callable[[], str | None] = lambda: None,
) -> tuple[dict[str, int], array.array, int]:
    """Poll the topics' last stable offsets until they stop moving for ``settle_s`` with at least
    the expected records, then count read_committed. Returns the counts, the CreateTime stamps
    and the wall time (ms) the LSOs first reached their final values. Raises when records are
    missing after ``timeout_s`` or any topic has more than expected (duplicates)."""
    from confluent_kafka import Consumer, KafkaException

    from cdcrouter.consumer._kafka import consumer_conf

    want = sum(expected.values())
    consumer = Consumer(consumer_conf(conns, f"benchanchor-watch-{uuid.uuid4().hex[:8]}"))
    deadline = time.monotonic() + timeout_s
    last, reached_ms, still_since = -1, 0, time.monotonic()
    try:
        while True:
            try:
                total = _lso_total(consumer, topics, partitions)
            except KafkaException as exc:
                if not _not_known_yet(exc) or time.monotonic() > deadline:
                    raise
                # a new client: this one may never refresh the metadata of a topic it found unknown
                consumer.close()
                consumer = Consumer(consumer_conf(conns, f"benchanchor-watch-{uuid.uuid4().hex[:8]}"))
                time.sleep(0.5)  # the deadline still bounds the wait
                continue
            now = time.monotonic()
            if total != last:
                last, reached_ms, still_since = total, time.time_ns() // 1_000_000, now
            elif total >= want and now - still_since >= settle_s:
                counts, stamps = read_outputs(conns, topics, partitions)
                if any(counts[t] > expected[t] for t in topics):
                    raise RuntimeError(f"duplicates: read {counts}, expected {expected}")
                if sum(counts.values()) == want:
                    return counts, stamps, reached_ms
            problem = alive()
            if problem:
                raise RuntimeError(problem)
            if now > deadline:
                counts, _ = read_outputs(conns, topics, partitions)
                missing = {t: expected[t] - counts[t] for t in topics if counts[t] != expected[t]}
                raise RuntimeError(f"records missing after {timeout_s:.0f} s: {missing}")
            time.sleep(0.1)
    finally:
        consumer.close()


def row_result(
    engine: str,
    wl: Workload,
    stamps: array.array,
    visible_ms: int,
    sampler: Sampler,
    load: tuple[float, float, float],
    **extra: Any,
) -> dict[str, Any]:
    ordered = sorted(stamps)
    t_warm = ordered[wl.expected_warmup - 1] if wl.expected_warmup else ordered[0]
    t_last = ordered[-1]
    seconds = (t_last - t_warm) / 1000
    by_process = sampler.cpu_seconds(t_warm, t_last)
    cpu = sum(by_process.values())
    return {
        "engine": engine,
        **extra,
        "events": wl.events,
        "warmup_events": wl.warmup,
        "output_records": len(ordered),
        "seconds": round(seconds, 3),
        "events_per_s": round(wl.events / seconds) if seconds > 0 else None,
        "visible_lag_s": round((visible_ms - t_last) / 1000, 2),
        "cpu_s": round(cpu, 2),
        "cpu_s_by_process": {k: round(v, 2) for k, v in by_process.items()},
        "cpu_us_per_event": round(cpu * 1e6 / wl.events, 1),
        "cores_busy": round(cpu / seconds, 2) if seconds > 0 else None,
        "peak_rss_mb": {k: round(v / 2**20) for k, v in sampler.peak_rss.items()},
        "loadavg_before": [round(x, 2) for x in load],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


# ---- the rows -------------------------------------------------------------------------------------


def _output_topics(
    conns: Any, wl: Workload, prefix: str, workdir: Path
) -> tuple[Path, list[str], dict[str, int], list[str]]:
    """The row's filters file, its output topics, expected counts by topic, and every topic made
    (the filtered ones and their dead-letter topics)."""
    from cdcrouter.filters import load_filters
    from cdcrouter.topics import TopicDefaults, admin_client, apply_topics, plan_topics, topics_for

    path = workdir / f"{prefix}filters.yaml"
    path.write_text(wl.filters_yaml(prefix))
    specs = topics_for(path, defaults=TopicDefaults(partitions=wl.partitions), raw_topic=wl.raw_topic)
    own = [s for s in specs if s.name.startswith(prefix)]
    admin = admin_client(conns.kafka.to_librdkafka())
    apply_topics(admin, plan_topics(admin, own))
    by_topic: dict[str, int] = {}
    for f in load_filters(path).filters:
        by_topic[f.output_topic] = by_topic.get(f.output_topic, 0) + wl.expected.get(f.id, 0)
    return path, sorted(by_topic), by_topic, [s.name for s in own]


def row_timeout_s(wl: Workload) -> float:
    """How long a row may take before its missing records fail it: 600 s plus 1 ms per event, so
    Flink's 100-filter per-topic rows (~2,000 events/s under load) have room at 1,200,000 events."""
    return 600.0 + wl.total / 1000


Inspect = Callable[[str, list[str]], None]  # (the row's topic prefix, its output topics), before deletion


def embedded_row(
    conns: Any, wl: Workload, workdir: Path, timeout_s: float | None = None, inspect: Inspect | None = None
) -> dict[str, Any]:
    """``cdcrouter run`` as shipped (exactly-once), in a process of its own."""
    from cdcrouter.schemas.registry import RegistryClient, apply_schemas, desired_subjects, plan_schemas
    from cdcrouter.topics import delete_topics

    prefix = f"benchanchor-{uuid.uuid4().hex[:8]}-"
    path, topics, expected, made = _output_topics(conns, wl, prefix, workdir)
    with RegistryClient(conns.registry.to_client_conf()) as reg:  # what `schemas apply` does first
        apply_schemas(reg, plan_schemas(reg, desired_subjects(wl.raw_topic, topics)))
    env = {
        **os.environ,
        "CDCROUTER_KAFKA__BOOTSTRAP_SERVERS": conns.kafka.bootstrap_servers,
        "CDCROUTER_REGISTRY__URL": conns.registry.url,
    }
    cmd = [sys.executable, "-m", "cdcrouter.cli.main", "run", "--filters", str(path), "--raw-topic"]
    cmd += [wl.raw_topic, "--group", f"{prefix}g", "--no-reload", "--instance-id", prefix + "0"]
    cmd += ["--max-events", str(wl.total)]
    load = os.getloadavg()
    log = (workdir / f"{prefix}router.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    sampler = Sampler({"router": proc.pid}).start()

    def alive() -> str | None:
        code = proc.poll()
        return f"the router exited with {code}: see {log.name}" if code not in (None, 0) else None

    try:
        timeout_s = timeout_s or row_timeout_s(wl)
        _, stamps, visible = wait_complete(conns, topics, wl.partitions, expected, 1.0, timeout_s, alive)
        if inspect:
            inspect(prefix, topics)
    finally:
        sampler.stop()
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        log.close()
        delete_topics(conns, made)
    return row_result("embedded", wl, stamps, visible, sampler, load, delivery="exactly-once")


def flink_row(
    conns: Any,
    cluster: FlinkCluster,
    wl: Workload,
    workdir: Path,
    exactly_once: bool,
    interval: str,
    sink_shape: str = "per-topic",
    timeout_s: float | None = None,
    inspect: Inspect | None = None,
) -> dict[str, Any]:
    """The generated statement set on the private cluster, at its default parallelism."""
    from cdcrouter.topics import delete_topics

    prefix = f"benchanchor-{uuid.uuid4().hex[:8]}-"
    path, topics, expected, made = _output_topics(conns, wl, prefix, workdir)
    dep = _deployment(conns, cluster, prefix.rstrip("-"), wl.raw_topic, workdir, interval, exactly_once)
    load = os.getloadavg()
    sampler = Sampler(dict(cluster.pids)).start()
    job: dict[str, Any] = {}

    def alive() -> str | None:
        if not job.get("job_id"):
            return None
        state = dep.rest.job(job["job_id"]).get("state")
        if state not in ("RUNNING", "CREATED", "INITIALIZING"):
            return f"the Flink job is {state}: {dep.rest.root_exception(job['job_id'])}"
        return None

    try:
        job["job_id"] = _deploy(dep, path, sink_shape)
        settle = 2 * _seconds(interval) + 1.0
        timeout_s = timeout_s or row_timeout_s(wl)
        _, stamps, visible = wait_complete(conns, topics, wl.partitions, expected, settle, timeout_s, alive)
        restarts = dep.rest.client.get(
            f"{dep.rest.url}/jobs/{job['job_id']}/metrics", params={"get": "numRestarts"}
        )
        if any(float(m.get("value", 0)) > 0 for m in restarts.json()):
            raise RuntimeError("the Flink job restarted during the row")
        if inspect:
            inspect(prefix, topics)
    finally:
        sampler.stop()
        with contextlib.suppress(Exception):
            dep.delete()
        dep.close()
        delete_topics(conns, made)
    return row_result(
        "flink",
        wl,
        stamps,
        visible,
        sampler,
        load,
        delivery="exactly-once" if exactly_once else "at-least-once",
        checkpoint_interval=interval,
        sink_shape=sink_shape,
        parallelism=cluster.config.get("parallelism.default"),
    )


def _deployment(
    conns: Any,
    cluster: FlinkCluster,
    name: str,
    raw_topic: str,
    state_dir: Path,
    interval: str,
    exactly_once: bool,
) -> FlinkDeployment:
    from cdcrouter.backends.flink_sql import render_placeholders
    from cdcrouter.deploy.values import flink_connection_options, flink_values

    values = flink_values(conns, f"cdcrouter-{name}")
    return FlinkDeployment(
        name,
        cluster.gateway_url,
        cluster.rest_url,
        state_dir,
        lambda sql: render_placeholders(sql, values),
        FlinkOptions(
            checkpoint_interval=interval,
            raw_topic=raw_topic,
            exactly_once=exactly_once,
            connection_options=flink_connection_options(conns),
        ),
    )


def _deploy(dep: FlinkDeployment, filters_path: Path, sink_shape: str = "per-topic") -> str:
    from cdcrouter.backends.flink_sql import generate_sql
    from cdcrouter.filters import load_filters

    plan, script = dep.plan(generate_sql(load_filters(filters_path), target="flink", sink_shape=sink_shape))
    return str(dep.apply(plan, script)["job_id"])


def _seconds(interval: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "min": 60.0}
    for suffix, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if interval.endswith(suffix):
            return float(interval[: -len(suffix)]) * factor
    return float(interval)


# ---- the whole comparison -------------------------------------------------------------------------


def anchor(
    conns: Any,
    filters_yaml: Callable[[str], str],
    events: int = 1_000_000,
    warmup: int = 200_000,
    repeat: int = 3,
    interval: str = "5s",
    sink_shapes: tuple[str, ...] = ("per-topic",),
    deliveries: tuple[str, ...] = ("at-least-once", "exactly-once"),
    embedded: bool = True,
    cores: int | None = None,
    cluster: FlinkCluster | None = None,
    report: Callable[[dict[str, Any]], None] = lambda row: None,
) -> dict[str, Any]:
    """``repeat`` rounds of: ours (exactly-once), then Flink at-least-once and exactly-once per
    sink shape, all on one pre-written raw topic. ``cluster``: an existing Flink (tests) instead
    of a private one sized by :func:`fair_flink_config`. Returns every row plus per-row-kind
    medians and ranges."""
    cores = cores or len(os.sched_getaffinity(0))
    workdir = Path(tempfile.mkdtemp(prefix="cdcrouter-anchor-"))
    rows: list[dict[str, Any]] = []
    try:
        with contextlib.ExitStack() as stack:
            flink = cluster or stack.enter_context(private_flink(cores))  # first: it may fail to start
            wl = write_workload(conns, filters_yaml, warmup, events, partitions=cores)
            stack.callback(drop_workload, conns, wl)
            for round_ in range(repeat):
                runs: list[Callable[[], dict[str, Any]]] = []
                if embedded:
                    runs.append(lambda: embedded_row(conns, wl, workdir))
                for shape in sink_shapes:
                    for eo in (d == "exactly-once" for d in deliveries):
                        runs.append(
                            lambda shape=shape, eo=eo: flink_row(  # type: ignore[misc]
                                conns, flink, wl, workdir, eo, interval, shape
                            )
                        )
                for run in runs:
                    row = {"round": round_ + 1, **run()}
                    rows.append(row)
                    report(row)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "events": events,
        "warmup_events": warmup,
        "cores": cores,
        "raw_partitions": cores,
        "expected_output_records": wl.expected_total,
        "flink_config": {
            k: v for k, v in (flink.config if cluster else fair_flink_config(cores)).items() if v is not None
        },
        "rows": rows,
        "summary": summarize(rows),
    }


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per row kind (engine, delivery, sink shape): median and range of the rate and the CPU per
    event (:func:`cdcrouter.bench.stats.spread`), the largest peak RSS and the load averages seen."""
    from cdcrouter.bench.stats import spread

    def kind(r: dict[str, Any]) -> tuple[str, str, str]:
        return r["engine"], r["delivery"], r.get("sink_shape", "")

    out = []
    for key in dict.fromkeys(kind(r) for r in rows):
        mine = [r for r in rows if kind(r) == key]
        loads = [x for r in mine for x in (r["loadavg_before"][0], r["loadavg_after"][0])]
        out.append(
            {
                "engine": key[0],
                "delivery": key[1],
                **({"sink_shape": key[2]} if key[2] else {}),
                "runs": len(mine),
                "events_per_s": spread([r["events_per_s"] for r in mine]),
                "cpu_us_per_event": spread([r["cpu_us_per_event"] for r in mine]),
                "peak_rss_mb_max": {
                    k: max(r["peak_rss_mb"].get(k, 0) for r in mine) for k in mine[0]["peak_rss_mb"]
                },
                "load_1m_range": [min(loads), max(loads)],
            }
        )
    return out


# ---- filter sets ---------------------------------------------------------------------------------


def realistic_filters_yaml(topic_prefix: str, count: int = 100) -> str:
    """``count`` (<= 100) filters over the seed-shaped events with realistic selectivity: every
    event matches one per-team filter (event name x status / make / service type), about half
    match one band filter (loan amount, car price, service cost), a fifth one per-table delete
    audit, and a few a dealer's own filter; so most events match 1-3 filters, none hundreds."""
    import json

    from cdcrouter.route.events import _KINDS, _MAKES, _SERVICES, _STATUSES

    a = "eventBody.entities[0].updatedAttributes."
    name = "eventHeader.eventName"
    num = {"valueType": "number"}
    rows: list[tuple[str, list[dict[str, object]]]] = []
    by_kind = {
        "Loan": ("loan.status", _STATUSES),
        "Car": ("car.make", _MAKES),
        "ServiceRecord": ("service.type", _SERVICES),
    }
    for kind, _table, names in _KINDS:
        field, values = by_kind[kind]
        for event_name in names:
            for v in values:
                conds = [
                    {"field": name, "operator": "equals", "value": event_name},
                    {"field": a + field, "operator": "equals", "value": v},
                ]
                rows.append((f"{event_name}-{v}".lower(), conds))
    bands = [
        ("loan.loanAmount", 0, 10_000, 5_000, 12),
        ("car.price", 3_000, 9_200, 4_600, 10),
        ("service.cost", 40, 500, 250, 5),
    ]
    for field, start, step, width, n in bands:
        for k in range(n):
            low = start + k * step
            conds = [{"field": a + field, "operator": "between", "min": low, "max": low + width - 1, **num}]
            rows.append((f"{field.replace('.', '-')}-{low}".lower(), conds))
    for _kind, table, _names in _KINDS:
        conds = [
            {"field": "sourceMetadata.table", "operator": "equals", "value": table},
            {"field": "sourceMetadata.operation", "operator": "equals", "value": "DELETE"},
        ]
        rows.append((f"deletes-{table}".replace("_", "-"), conds))
    k = 0
    while len(rows) < 100:
        rows.append(
            (f"dealer-d-{k}", [{"field": a + "service.dealer", "operator": "equals", "value": f"D-{k}"}])
        )
        k += 1
    lines = ["filters:"]
    for i, (fid, conds) in enumerate(rows[:count]):
        item = {
            "id": fid,
            "consumerId": f"team-{i % 40}",
            "outputTopic": f"{topic_prefix}{fid}",
            "conditions": conds,
        }
        lines.append("  - " + json.dumps(item))
    return "\n".join(lines) + "\n"


# ---- latency ----------------------------------------------------------------------------------------


def _bench_filter_topics(conns: Any, raw_topic: str, filters: int, workdir: Path) -> tuple[Path, list[str]]:
    """A filters file with the benchmark filters writing to topics of Flink's own."""
    from cdcrouter.route.events import bench_filters_yaml
    from cdcrouter.topics import admin_client, apply_topics, plan_topics, topics_for

    prefix = f"benchflink-{uuid.uuid4().hex[:8]}-"
    path = workdir / f"{prefix}filters.yaml"
    path.write_text(bench_filters_yaml(prefix, filters))
    specs = topics_for(path, raw_topic=raw_topic)
    admin = admin_client(conns.kafka.to_librdkafka())
    apply_topics(admin, plan_topics(admin, [s for s in specs if s.role == "filtered"]))
    return path, sorted(s.name for s in specs if s.role == "filtered")


FLINK_WARMUP_S = 10.0  # at the measured rate, then until every warm-up record is visible


def flink_latency(
    conns: Any,
    cluster: FlinkCluster,
    filters: int,
    rate: int,
    seconds: float,
    workdir: Path,
    interval: str = "1s",
    exactly_once: bool = True,
    pids: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Append at ``rate`` for ``seconds`` while the statement set runs; append -> visible.
    ``pids``: the cluster's JVMs, whose peak RSS during the row is reported."""
    from cdcrouter.bench.route import (
        WARMUP_S,
        Visible,
        append_now,
        append_paced,
        latency_writer,
        read_filtered,
        setup,
        teardown,
    )
    from cdcrouter.topics import delete_topics

    s = setup(conns, filters, workdir=workdir)  # a fresh raw topic with its schema registered
    path, topics = _bench_filter_topics(conns, s.raw_topic, filters, workdir)
    name = f"benchlat-{uuid.uuid4().hex[:8]}"
    dep = _deployment(conns, cluster, name, s.raw_topic, workdir, interval, exactly_once)
    seen = Visible()
    stop = threading.Event()
    group = f"bench-reader-{uuid.uuid4().hex[:8]}"
    reader = threading.Thread(target=read_filtered, args=(conns, topics, group, seen, stop), daemon=True)
    producer = latency_writer(conns)
    load = os.getloadavg()
    sampler = Sampler(dict(pids or {})).start()
    try:
        _deploy(dep, path)
        reader.start()
        i = 0
        deadline = time.monotonic() + 90
        while not seen.samples:  # warm-up: the job routes and the reader sees it
            if time.monotonic() > deadline:
                raise RuntimeError("no routed record became visible within 90 s")
            for _ in range(50):
                append_now(producer, s, i)
                i += 1
            producer.flush(5)
            time.sleep(0.2)
        # then the measured rate until the job keeps up: a just-deployed job (cold JIT, a new job's
        # generated code, the first checkpoints) ran 6-9 s behind at 5,000/s through a 3 s warm-up
        # (2026-12-07, first round on a new cluster), so the window starts once every warm-up
        # record is visible
        i, _, _ = append_paced(producer, s, rate, max(WARMUP_S, FLINK_WARMUP_S), i, expect=seen)
        producer.flush(10)
        seen.wait_complete("bench flink latency warm-up", 2 * _seconds(interval) + 120)
        seen.expected = {}
        seen.clear()
        i, sent, send_s = append_paced(producer, s, rate, seconds, i, expect=seen)
        producer.flush(10)
        # every routed record, or an error: exactly-once sinks show records at the next checkpoint
        seen.wait_complete("bench flink latency", 2 * _seconds(interval) + 30)
    finally:
        sampler.stop()
        stop.set()
        reader.join(10)
        with contextlib.suppress(Exception):
            dep.delete()
        dep.close()
        delete_topics(conns, topics)
        teardown(conns, s)
    return {
        "engine": "flink",
        "delivery": "exactly-once" if exactly_once else "at-least-once",
        "checkpoint_interval": interval,
        **(
            {
                "bound": "exactly-once output is readable only once a checkpoint commits it: a record "
                "waits up to one checkpoint interval, half of one on average"
            }
            if exactly_once
            else {}
        ),
        "rate_target": rate,
        "rate_achieved": round(sent / send_s),
        **seen.summary(),
        "peak_rss_mb": {k: round(v / 2**20) for k, v in sampler.peak_rss.items()},
        "loadavg_before": [round(x, 2) for x in load],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def latency_side_by_side(
    conns: Any,
    filters: int = 20,
    rate: int = 5_000,
    seconds: float = 20.0,
    interval: str = "1s",
    cores: int | None = None,
    repeat: int = 1,
    report: Callable[[dict[str, Any]], None] = lambda row: None,
) -> list[dict[str, Any]]:
    """``repeat`` rounds of: ours (exactly-once), then Flink at-least-once and exactly-once, on one
    fair private cluster started once (its start is not latency). Every row has its load."""
    from cdcrouter.bench import route as emb

    cores = cores or len(os.sched_getaffinity(0))
    workdir = Path(tempfile.mkdtemp(prefix="cdcrouter-bench-flink-"))
    rows: list[dict[str, Any]] = []
    try:
        with private_flink(cores) as cluster:
            for round_ in range(repeat):
                load = os.getloadavg()
                ours = emb.latency(conns, rate, seconds, filters)
                rows.append({"round": round_ + 1, "engine": "embedded", "delivery": "exactly-once", **ours})
                rows[-1]["loadavg_before"] = [round(x, 2) for x in load]
                rows[-1]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
                report(rows[-1])
                for eo in (False, True):
                    got = flink_latency(
                        conns, cluster, filters, rate, seconds, workdir, interval, eo, cluster.pids
                    )
                    rows.append({"round": round_ + 1, **got})
                    report(rows[-1])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


def summarize_latency(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per row kind (engine, delivery): median and range of p50, p99 and max, and the loads seen."""
    from cdcrouter.bench.stats import spread

    out = []
    for key in dict.fromkeys((r["engine"], r["delivery"]) for r in rows):
        mine = [r for r in rows if (r["engine"], r["delivery"]) == key]
        loads = [x for r in mine for x in (r["loadavg_before"][0], r["loadavg_after"][0])]
        out.append(
            {
                "engine": key[0],
                "delivery": key[1],
                "runs": len(mine),
                **{k: spread([r[k] for r in mine]) for k in ("p50_ms", "p99_ms", "max_ms")},
                "load_1m_range": [min(loads), max(loads)],
            }
        )
    return out
