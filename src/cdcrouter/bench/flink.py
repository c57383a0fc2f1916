"""Flink vs the embedded engine, side by side: same raw topic, same filters, same machine.

Throughput: N seed-shaped events are written to a fresh raw topic first. The embedded engine
drains them in-process (:func:`cdcrouter.bench.route.throughput`'s measure: first record consumed
to last commit). Flink runs the generated statement set through the SQL Gateway (exactly-once
sinks, like the embedded engine); its time is from the first record its Kafka source emitted to
the N-th (the source's ``numRecordsOut``, polled from the JobManager), so job start-up is not
counted on either side.

Latency: a deployed job (embedded: a ``cdcrouter run`` process; Flink: the statement set) while
events are appended at a fixed rate with ``savedDate`` = the wall clock; latency = when the record
became visible to a read_committed consumer - ``savedDate``. Flink's exactly-once sink makes
records visible at checkpoints, so its latency follows the checkpoint interval.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from cdcrouter.deploy.flink_target import FlinkDeployment, FlinkOptions


def _flink_setup(conns: Any, raw_topic: str, filters: int, workdir: Path) -> tuple[Path, list[str]]:
    """A filters file with the same benchmark filters writing to Flink's own topics."""
    from cdcrouter.route.events import bench_filters_yaml
    from cdcrouter.topics import admin_client, apply_topics, plan_topics, topics_for

    prefix = f"benchflink-{uuid.uuid4().hex[:8]}-"
    path = workdir / "filters-flink.yaml"
    path.write_text(bench_filters_yaml(prefix, filters))
    specs = topics_for(path, raw_topic=raw_topic)
    admin = admin_client(conns.kafka.to_librdkafka())
    apply_topics(admin, plan_topics(admin, [s for s in specs if s.role == "filtered"]))
    return path, sorted(s.name for s in specs if s.role == "filtered")


def _deployment(
    conns: Any, name: str, raw_topic: str, state_dir: Path, interval: str, exactly_once: bool = True
) -> FlinkDeployment:
    from cdcrouter.backends.flink_sql import render_placeholders
    from cdcrouter.deploy.values import flink_connection_options, flink_values

    values = flink_values(conns, f"cdcrouter-{name}")
    return FlinkDeployment(
        name,
        conns.flink.sql_gateway_url,
        conns.flink.rest_url,
        state_dir,
        lambda sql: render_placeholders(sql, values),
        FlinkOptions(
            checkpoint_interval=interval,
            raw_topic=raw_topic,
            exactly_once=exactly_once,
            connection_options=flink_connection_options(conns),
        ),
    )


def _deploy(dep: FlinkDeployment, filters_path: Path) -> str:
    from cdcrouter.backends.flink_sql import generate_sql
    from cdcrouter.filters import load_filters

    plan, script = dep.plan(generate_sql(load_filters(filters_path), target="flink"))
    return str(dep.apply(plan, script)["job_id"])


def _source_records_out(dep: FlinkDeployment, job_id: str) -> int:
    """The Kafka source's ``numRecordsOut`` (sum over subtasks and source vertices)."""
    client, url = dep.rest.client, dep.rest.url
    total = 0
    for v in client.get(f"{url}/jobs/{job_id}").json().get("vertices", []):
        if not v["name"].startswith("Source"):
            continue
        base = f"{url}/jobs/{job_id}/vertices/{v['id']}/subtasks/metrics"
        names = [m["id"] for m in client.get(base).json()]
        wanted = [n for n in names if n.startswith("Source") and n.endswith(".numRecordsOut")]
        if wanted:
            got = client.get(base, params={"get": ",".join(wanted), "agg": "sum"}).json()
            total += int(sum(float(m.get("sum", 0)) for m in got))
    return total


def flink_throughput(
    conns: Any,
    raw_topic: str,
    events: int,
    filters: int,
    workdir: Path,
    interval: str = "1s",
    exactly_once: bool = True,
) -> dict[str, Any]:
    from cdcrouter.topics import delete_topics

    path, topics = _flink_setup(conns, raw_topic, filters, workdir)
    dep = _deployment(conns, f"bench-{uuid.uuid4().hex[:8]}", raw_topic, workdir, interval, exactly_once)
    try:
        job = _deploy(dep, path)
        first_at = None
        deadline = time.monotonic() + 300
        while True:
            n = _source_records_out(dep, job)
            now = time.monotonic()
            restarts = dep.rest.client.get(
                f"{dep.rest.url}/jobs/{job}/metrics", params={"get": "numRestarts"}
            )
            if any(float(m.get("value", 0)) > 0 for m in restarts.json()):
                raise RuntimeError(f"the Flink job restarted (counts reset): {dep.rest.root_exception(job)}")
            if n > 0 and first_at is None:
                first_at = now
            if n >= events:
                break
            if now > deadline:
                raise RuntimeError(f"Flink read {n} of {events} events in 300 s")
            time.sleep(0.1)
        seconds = now - (first_at or now)
    finally:
        dep.delete()
        dep.close()
        delete_topics(conns, topics)
    return {
        "engine": "flink",
        "delivery": "exactly-once" if exactly_once else "at-least-once",
        "checkpoint_interval": interval,
        "events": events,
        "filters": filters,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds) if seconds else 0,
        "filtered_topics": len(topics),
    }


def flink_latency(
    conns: Any, filters: int, rate: int, seconds: float, workdir: Path, interval: str = "1s"
) -> dict[str, Any]:
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
    path, topics = _flink_setup(conns, s.raw_topic, filters, workdir)  # Flink registers its own schemas
    dep = _deployment(conns, f"benchlat-{uuid.uuid4().hex[:8]}", s.raw_topic, workdir, interval)
    seen = Visible()
    stop = threading.Event()
    group = f"bench-reader-{uuid.uuid4().hex[:8]}"
    reader = threading.Thread(target=read_filtered, args=(conns, topics, group, seen, stop), daemon=True)
    producer = latency_writer(conns)

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
        i, _, _ = append_paced(producer, s, rate, WARMUP_S, i)  # the same warm-up as the embedded run
        time.sleep(2 * _seconds(interval))
        seen.clear()
        i, sent, send_s = append_paced(producer, s, rate, seconds, i, expect=seen)
        producer.flush(10)
        # every routed record, or an error: exactly-once sinks show records at the next checkpoint
        seen.wait_complete("bench flink latency", 2 * _seconds(interval) + 30)
    finally:
        stop.set()
        reader.join(10)
        dep.delete()
        dep.close()
        delete_topics(conns, topics)
        teardown(conns, s)
    return {
        "engine": "flink",
        "rate_target": rate,
        "rate_achieved": round(sent / send_s),
        **seen.summary(),
        "checkpoint_interval": interval,
    }


def _seconds(interval: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "min": 60.0}
    for suffix, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if interval.endswith(suffix):
            return float(interval[: -len(suffix)]) * factor
    return float(interval)


def side_by_side(
    conns: Any,
    events: int = 200_000,
    filters: int = 20,
    rate: int = 5_000,
    seconds: float = 20.0,
    interval: str = "1s",
    latency: bool = True,
    exactly_once: bool = True,
) -> dict[str, Any]:
    """Both engines on the same raw topic and filters; ratios are embedded / Flink."""
    import tempfile

    from cdcrouter.bench import route as emb
    from cdcrouter.route.engine import Router, RouterOptions

    workdir = Path(tempfile.mkdtemp(prefix="cdcrouter-bench-flink-"))
    try:
        s = emb.setup(conns, filters, workdir=workdir)
        try:
            emb.produce_events(conns, s.raw_topic, s.raw_schema_id, events)
            router = Router(
                s.filters_path,
                conns,
                RouterOptions(raw_topic=s.raw_topic, group_id=f"{s.prefix}g", reload=False),
            )
            stats = router.run(max_events=events, idle_timeout_s=30)
            flink = flink_throughput(conns, s.raw_topic, events, filters, workdir, interval, exactly_once)
        finally:
            emb.teardown(conns, s)
        if latency:
            lat_e = emb.latency(conns, rate=rate, seconds=seconds, filters=filters)
            lat_f = flink_latency(conns, filters, rate, seconds, workdir, interval)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    embedded = {
        "engine": "embedded",
        "events": stats.consumed,
        "seconds": round(stats.active_seconds, 3),
        "events_per_s": round(stats.consumed / stats.active_seconds) if stats.active_seconds else 0,
    }
    out: dict[str, Any] = {
        "events": events,
        "filters": filters,
        "throughput": {"embedded": embedded, "flink": flink},
        "throughput_ratio_embedded_over_flink": round(embedded["events_per_s"] / flink["events_per_s"], 2)
        if flink["events_per_s"]
        else None,
    }
    if latency:
        out["latency"] = {"embedded": lat_e, "flink": lat_f}
    return out
