"""The Flink anchor's harness counts exactly, and the one-sink shape routes like the embedded router.

2,000 seed-shaped events (500 warm-up) through ours and Flink's one-sink shape, both exactly-once
(transaction markers in every topic), Flink on the shared stack's cluster.
The oracle is plain Python over the event dicts, not the compiler: per filter, the records each
row's output topic must hold. Each topic is also read here with a consumer of the test's own and
every record decoded: its ``filterMetadata.filterId`` is the topic's filter and the events are
exactly the oracle's (one-sink rows naming their topic must land in that topic and no other).
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka import Consumer

from cdcrouter.route.events import make_event

pytestmark = pytest.mark.integration

WARMUP, EVENTS = 500, 1_500

FILTERS: dict[str, tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = {
    "loan-created": (
        {"field": "eventHeader.eventName", "operator": "equals", "value": "LoanCreated"},
        lambda e: e["eventHeader"]["eventName"] == "LoanCreated",
    ),
    "cars": (
        {"field": "eventBody.entities[0].entityType", "operator": "equals", "value": "Car"},
        lambda e: e["eventBody"]["entities"][0]["entityType"] == "Car",
    ),
    "deletes": (
        {"field": "sourceMetadata.operation", "operator": "equals", "value": "DELETE"},
        lambda e: e["sourceMetadata"]["operation"] == "DELETE",
    ),
}


def filters_yaml(prefix: str) -> str:
    lines = ["filters:"]
    for fid, (cond, _) in FILTERS.items():
        item = {"id": fid, "consumerId": "team", "outputTopic": f"{prefix}{fid}", "conditions": [cond]}
        lines.append("  - " + json.dumps(item))
    return "\n".join(lines) + "\n"


def oracle() -> dict[str, Counter[str]]:
    """Per filter id, the multiset of event uuids it must route."""
    out: dict[str, Counter[str]] = {fid: Counter() for fid in FILTERS}
    for i in range(WARMUP + EVENTS):
        event = make_event(i)
        for fid, (_, match) in FILTERS.items():
            if match(event):
                out[fid][event["eventHeader"]["uuid"]] += 1
    return out


def read_topic(conns: Any, topic: str) -> list[dict[str, Any]]:
    """Every committed record of ``topic``, decoded with the schema its header names."""
    from cdcrouter.consumer._kafka import consumer_conf, read_range, stable_bounds
    from cdcrouter.schemas.registry import RegistryClient

    consumer = Consumer(consumer_conf(conns, f"{topic}-check"))
    try:
        bounds = stable_bounds(consumer, topic, [0, 1])
        values = [m.value() for m in read_range(consumer, topic, bounds)]
    finally:
        consumer.close()
    out = []
    with RegistryClient(conns.registry.to_client_conf()) as reg:
        schemas: dict[int, Any] = {}
        for v in values:
            assert v[0] == 0, "not Confluent-framed"
            sid = int.from_bytes(v[1:5], "big")
            if sid not in schemas:
                schemas[sid] = fastavro.parse_schema(json.loads(reg.schema_by_id(sid)))
            out.append(fastavro.schemaless_reader(io.BytesIO(v[5:]), schemas[sid]))
    return out


def test_anchor_rows_count_every_record_and_one_sink_routes_like_ours(
    stack_with: Callable[..., Any], tmp_path: Path
) -> None:
    from cdcrouter.bench import flink as anchor

    handle = stack_with("kafka", "registry", "sql-gateway")
    conns = handle.connections
    cluster = anchor.FlinkCluster(conns.flink.sql_gateway_url, conns.flink.rest_url, pids={}, config={})
    want = oracle()
    checked: list[str] = []

    def inspect(prefix: str, topics: list[str]) -> None:
        for topic in topics:
            fid = topic.removeprefix(prefix)
            records = read_topic(conns, topic)
            assert {r["filterMetadata"]["filterId"] for r in records} <= {fid}, topic
            got = Counter(r["eventHeader"]["uuid"] for r in records)
            assert got == want[fid], f"{topic}: {sum(got.values())} records, oracle {sum(want[fid].values())}"
        checked.append(prefix)

    wl = anchor.write_workload(conns, filters_yaml, WARMUP, EVENTS, partitions=2)
    try:
        rows = [
            anchor.embedded_row(conns, wl, tmp_path, timeout_s=120, inspect=inspect),
            anchor.flink_row(conns, cluster, wl, tmp_path, True, "1s", "one-sink", 180, inspect),
        ]
    finally:
        anchor.drop_workload(conns, wl)
    total = sum(sum(c.values()) for c in want.values())
    warm = sum(1 for i in range(WARMUP) for _, m in FILTERS.values() if m(make_event(i)))
    assert len(checked) == 2
    assert wl.expected_total == total and wl.expected_warmup == warm
    for row in rows:
        assert row["output_records"] == total, row
        assert row["events"] == EVENTS and row["seconds"] > 0 and row["events_per_s"] > 0, row


def test_latency_summary_gives_median_and_range_per_row_kind() -> None:
    """Three rounds of latency rows -> per engine and guarantee the median and range of p50, p99 and
    max, and the lowest and highest load seen (the figures BENCHMARKS.md rows need)."""
    from cdcrouter.bench.flink import summarize_latency

    def row(kind: tuple[str, str], p50: float, p99: float, top: float, loads: list[float]) -> dict[str, Any]:
        (engine, delivery), (before, after) = kind, loads
        return {
            "engine": engine,
            "delivery": delivery,
            **{"p50_ms": p50, "p99_ms": p99, "max_ms": top},
            "loadavg_before": [before, 0, 0],
            "loadavg_after": [after, 0, 0],
        }

    rows = [
        row(("embedded", "exactly-once"), 5.0, 9.0, 20.0, [1.0, 1.5]),
        row(("flink", "at-least-once"), 3.0, 30.0, 90.0, [1.5, 2.0]),
        row(("embedded", "exactly-once"), 7.0, 8.0, 30.0, [2.0, 2.5]),
        row(("flink", "at-least-once"), 2.0, 10.0, 40.0, [2.5, 3.0]),
        row(("embedded", "exactly-once"), 6.0, 11.0, 25.0, [0.5, 1.0]),
        row(("flink", "at-least-once"), 4.0, 20.0, 50.0, [3.0, 3.5]),
    ]
    got = {(s["engine"], s["delivery"]): s for s in summarize_latency(rows)}
    ours, flink = got["embedded", "exactly-once"], got["flink", "at-least-once"]
    assert ours["runs"] == flink["runs"] == 3
    assert ours["p50_ms"] == {"median": 6.0, "min": 5.0, "max": 7.0}
    assert ours["p99_ms"] == {"median": 9.0, "min": 8.0, "max": 11.0}
    assert ours["max_ms"] == {"median": 25.0, "min": 20.0, "max": 30.0}
    assert ours["load_1m_range"] == [0.5, 2.5]
    assert flink["p99_ms"] == {"median": 20.0, "min": 10.0, "max": 30.0}
    assert flink["load_1m_range"] == [1.5, 3.5]


def test_wait_complete_waits_for_a_topic_the_client_does_not_know_yet(
    stack_with: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    """The harness polls output topics made a moment before: their partitions may be unknown to
    the client (``_UNKNOWN_PARTITION``, ``NOT_LEADER_FOR_PARTITION`` after making 100 topics). That
    must wait within the deadline, not end the row: here the topic appears 2 s after the wait
    starts, then gets its 5 records, which the wait must count."""
    import threading
    import time

    from confluent_kafka import Producer
    from confluent_kafka.admin import NewTopic

    from cdcrouter.bench import flink as anchor
    from cdcrouter.topics import admin_client, delete_topics

    conns = stack_with("kafka").connections
    topic = unique_name("late")

    def make_and_fill() -> None:
        time.sleep(2)
        admin = admin_client(conns.kafka.to_librdkafka())  # kept: the future dies with its client
        admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
        producer = Producer(conns.kafka.producer_conf())
        for i in range(5):
            producer.produce(topic, b"v", str(i).encode(), partition=i % 2)
        assert producer.flush(30) == 0

    filler = threading.Thread(target=make_and_fill)
    filler.start()
    try:
        counts, stamps, _ = anchor.wait_complete(conns, [topic], 2, {topic: 5}, 0.5, 60)
    finally:
        filler.join(60)
        delete_topics(conns, [topic])
    assert counts == {topic: 5} and len(stamps) == 5
