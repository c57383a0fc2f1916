"""One status snapshot of the whole pipeline: two samples of Kafka offsets ``interval_s`` apart,
with everything else (capture state, dead-letter depths, the routing job, latencies) read in
between, so the window costs no extra time.

The result is a plain dict whose keys are documented in docs/operations.md ("Monitoring") and
pinned by tests/observe: scripts may rely on them.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cdcrouter.config import Connections
from cdcrouter.consumer import _kafka
from cdcrouter.observe import records
from cdcrouter.observe.capture_view import capture_section, retained_wal_bytes
from cdcrouter.observe.health import problems_of
from cdcrouter.observe.job import job_states
from cdcrouter.observe.kafka_probe import KafkaProbe, Offsets
from cdcrouter.observe.router_metrics import routed_totals
from cdcrouter.observe.targets import Targets

SCHEMA_VERSION = 1
ORDER = (
    "version", "generated_at", "sample_seconds", "healthy", "problems", "capture", "raw_topic", "filters",
    "filtered_topics", "dead_letter_topics", "jobs", "latency",
)  # fmt: skip


@dataclass(frozen=True)
class StatusOptions:
    interval_s: float = 2.0  # the sampling window: rates and "lag growing" compare its two ends
    latency_records: int = 50  # newest records per filtered topic the latency estimate reads
    state_dir: Path = Path(".cdcrouter")
    deploy_target: str | None = None  # flink | confluent-cloud; None: recorded Flink deployments
    deploy_name: str | None = None
    router_metrics: tuple[str, ...] = ()  # the routers' /metrics URLs: exact routed totals per filter


@dataclass
class _Sample:
    at: float
    bounds: dict[str, _kafka.Bounds] = field(default_factory=dict)
    committed: dict[str, Offsets] = field(default_factory=dict)
    retained_wal: int | None = None


def collect_status(targets: Targets, conns: Connections, opts: StatusOptions) -> dict[str, Any]:
    """The status document (see docs/operations.md for its keys)."""
    probe = KafkaProbe(conns)
    try:
        return _collect(probe, targets, conns, opts)
    finally:
        probe.close()


def _collect(probe: KafkaProbe, t: Targets, conns: Connections, opts: StatusOptions) -> dict[str, Any]:
    slot = t.pipeline.replication.slot if t.pipeline is not None else None
    parts = probe.partitions([t.raw_topic, *t.filtered_topics])
    filtered_tps = [(topic, p) for topic in t.filtered_topics for p in parts.get(topic, [])]
    all_groups = probe.group_ids()
    # a filtered topic's groups: those with commits on it, and those reading it without one yet
    reading = {
        g
        for g, d in probe.describe(all_groups).items()
        for m in d["members"]
        for a in m["assignment"]
        if a.rsplit(":", 1)[0] in t.filtered_topics
    }
    consumer_groups = sorted((set(probe.committed(all_groups, filtered_tps)) | reading) - {t.router_group})
    groups = [t.router_group, *consumer_groups]
    tps = [(topic, p) for topic, ps in parts.items() for p in ps]

    def sample() -> _Sample:
        s = _Sample(time.monotonic())
        s.committed = probe.committed(groups, tps)  # before the ends: a commit never passes its end
        s.bounds = {topic: probe.bounds(topic, ps) for topic, ps in parts.items()}
        s.retained_wal = retained_wal_bytes(conns, slot) if slot else None
        return s

    first = sample()
    doc: dict[str, Any] = {"version": SCHEMA_VERSION, "generated_at": now_iso()}
    doc["capture"] = capture_section(t.pipeline, conns) if t.pipeline is not None else None
    doc["dead_letter_topics"] = _dlqs(probe, t)
    doc["jobs"] = job_states(conns, opts.state_dir, opts.deploy_target, opts.deploy_name)
    decode = records.registry_decoder(conns)
    filtered_bounds = {topic: first.bounds[topic] for topic in t.filtered_topics if topic in first.bounds}
    latency = records.newest_latencies(probe, decode, filtered_bounds, opts.latency_records)
    time.sleep(max(0.0, opts.interval_s - (time.monotonic() - first.at)))
    second = sample()
    window = second.at - first.at
    doc["sample_seconds"] = round(window, 2)
    if doc["capture"] is not None:
        doc["capture"]["retained_wal_growth_bytes"] = _delta(first.retained_wal, second.retained_wal)
    describe = probe.describe(groups)
    lag_of = _Lag(probe, first, second)
    doc["raw_topic"] = {
        "name": t.raw_topic,
        "exists": t.raw_topic in parts,
        "router_group": _group(t.router_group, t.raw_topic, first, second, describe, lag_of),
    }
    totals, unreachable = routed_totals(list(opts.router_metrics))
    doc["filters"], doc["filtered_topics"] = _filtered(
        probe, decode, t, first, second, describe, lag_of, window, consumer_groups
    )
    doc["latency"] = [
        {
            "filter_id": r.filter_id,
            "topic": r.topic,
            **latency.get((r.topic, r.filter_id), _no_latency()),
        }
        for r in t.routes
    ]
    for f in doc["filters"]:
        f["routed_total"] = totals.get(f["id"], 0) if opts.router_metrics else None
    doc["problems"] = problems_of(doc, unreachable_metrics=unreachable)
    doc["healthy"] = not doc["problems"]
    return {k: doc[k] for k in ORDER}


class _Lag:
    """Readable lag: the committed records between a group's offset and the end, counted by reading
    them (a commit marker after the last record a group read leaves an offset gap that is no lag).
    All groups' ranges of both samples are read in one pass; a partition whose range spans more
    than ``EXACT_UP_TO`` offsets is not read and the offset difference stands in (an upper bound)."""

    EXACT_UP_TO = 5_000

    def __init__(self, probe: KafkaProbe, first: _Sample, second: _Sample) -> None:
        ranges: dict[tuple[str, int], tuple[int, int]] = {}
        for sample in (first, second):
            for offsets in sample.committed.values():
                for (topic, p), committed in offsets.items():
                    low, end = sample.bounds.get(topic, {}).get(p, (committed, committed))
                    start = max(committed, low)
                    have = ranges.get((topic, p), (start, end))
                    ranges[(topic, p)] = (min(have[0], start), max(have[1], end))
            for topic, bounds in sample.bounds.items():  # groups without a commit count from low
                for p, (low, end) in bounds.items():
                    have = ranges.get((topic, p), (low, end))
                    ranges[(topic, p)] = (min(have[0], low), max(have[1], end))
        readable = {tp: r for tp, r in ranges.items() if r[1] - r[0] <= self.EXACT_UP_TO}
        self.offsets = probe.offsets_in(readable)

    def __call__(self, topic: str, partition: int, start: int, end: int) -> int:
        if end <= start:
            return 0
        offsets = self.offsets.get((topic, partition))
        if offsets is None:
            return end - start
        return bisect.bisect_left(offsets, end) - bisect.bisect_left(offsets, start)


def _group(
    group: str,
    topic: str,
    first: _Sample,
    second: _Sample,
    describe: dict[str, dict[str, Any]],
    lag_of: _Lag,
) -> dict[str, Any]:
    """A group's lag on ``topic`` per partition at the window's end, and whether it grew."""
    rows = []
    for p, (low, end) in sorted(second.bounds.get(topic, {}).items()):
        committed = second.committed.get(group, {}).get((topic, p))
        before = first.committed.get(group, {}).get((topic, p))
        low_before, end_before = first.bounds.get(topic, {}).get(p, (low, end))
        rows.append(
            {
                "partition": p,
                "committed": committed,
                "end": end,
                "lag": lag_of(topic, p, max(committed if committed is not None else low, low), end),
                "lag_before": lag_of(
                    topic, p, max(before if before is not None else low_before, low_before), end_before
                ),
                "committed_delta": _delta(before, committed) or 0,
            }
        )
    info = describe.get(group, {"state": "UNKNOWN", "members": []})
    members = [
        {
            **m,
            "assignment": sorted(
                int(a.rsplit(":", 1)[1]) for a in m["assignment"] if a.startswith(f"{topic}:")
            ),
        }
        for m in info["members"]
    ]
    lag = sum(r["lag"] for r in rows)
    lag_before = sum(r["lag_before"] for r in rows)
    progressed = any(r["committed_delta"] > 0 for r in rows)
    return {
        "group": group,
        "state": info["state"],
        "members": [m for m in members if m["assignment"]] or members,
        "lag": lag,
        "lag_before": lag_before,
        "committed_in_window": sum(r["committed_delta"] for r in rows),
        "lag_growing": lag > lag_before and not progressed,
        "stalled": lag > 0 and lag_before > 0 and not progressed,
        "partitions": rows,
    }


def _filtered(
    probe: KafkaProbe,
    decode: Any,
    t: Targets,
    first: _Sample,
    second: _Sample,
    describe: dict[str, dict[str, Any]],
    lag_of: _Lag,
    window: float,
    consumer_groups: list[str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per filter: events/s (records counted in the window); per filtered topic: its groups' lag."""
    counted: dict[str, dict[str, int] | None] = {}  # None: too many to read, or no such topic
    windows = records.count_window(
        probe, decode, {x: first.bounds[x] for x in t.filtered_topics if x in first.bounds},
        {x: second.bounds[x] for x in t.filtered_topics if x in second.bounds},
    )  # fmt: skip
    topics = []
    for topic in t.filtered_topics:
        if topic not in second.bounds:
            topics.append(
                {
                    "name": topic, "exists": False, "end_offsets": {}, "events_per_s": None,
                    "events_counted": False, "groups": [],
                }
            )  # fmt: skip
            continue
        counts = windows.get(topic)
        end_delta = sum(e for _, e in second.bounds[topic].values()) - sum(
            e for _, e in first.bounds[topic].values()
        )
        counted[topic] = dict(counts) if counts is not None else None
        groups = [
            _group(g, topic, first, second, describe, lag_of)
            for g in consumer_groups
            if any(tp[0] == topic for tp in second.committed.get(g, {}))
            or any(a.rsplit(":", 1)[0] == topic for m in describe[g]["members"] for a in m["assignment"])
        ]
        topics.append(
            {
                "name": topic,
                "exists": True,
                "end_offsets": {str(p): end for p, (_, end) in sorted(second.bounds[topic].items())},
                "events_per_s": round(
                    (sum(counts.values()) if counts is not None else end_delta) / window, 1
                ),
                "events_counted": counts is not None,
                "groups": groups,
            }
        )
    filters = []
    for r in t.routes:
        per_topic = counted.get(r.topic)
        n = per_topic.get(r.filter_id, 0) if per_topic is not None else None
        filters.append(
            {
                "id": r.filter_id,
                "consumer_id": r.consumer_id,
                "topic": r.topic,
                "events_in_window": n,
                "events_per_s": round(n / window, 1) if n is not None else None,
            }
        )
    return filters, topics


def _dlqs(probe: KafkaProbe, t: Targets) -> list[dict[str, Any]]:
    """Depth (committed records) of the router's, capture's and every consumer's DLQ of this pipeline."""
    names = probe.topic_names()
    wanted: list[tuple[str, str]] = [(t.router_dlq, "router")]
    if t.capture_dlq:
        wanted.append((t.capture_dlq, "capture"))
    for topic in t.filtered_topics:
        wanted += [(n, "consumer") for n in names if n.startswith(f"{topic}.") and n.endswith(".dlq")]
    wanted = list(dict.fromkeys(wanted))
    parts = probe.partitions([n for n, _ in wanted])
    ranges = {(n, p): span for n, ps in parts.items() for p, span in probe.bounds(n, ps).items()}
    offsets = probe.offsets_in(ranges)
    return [
        {
            "name": name,
            "kind": kind,
            "exists": name in parts,
            "depth": sum(len(offsets[(name, p)]) for p in parts.get(name, [])),
        }
        for name, kind in wanted
    ]


def _delta(before: int | None, after: int | None) -> int | None:
    return None if before is None or after is None else after - before


def _no_latency() -> dict[str, Any]:
    return {
        "samples": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "routing_p50_ms": None,
        "last_routed_age_s": None,
    }  # fmt: skip


def now_iso() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
