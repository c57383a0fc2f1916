"""The embedded engine on the real stack: routing, dead letters, live reload, scale-out."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from cdcrouter.route.engine import Router, RouterOptions
from cdcrouter.route.events import bench_filters_yaml
from cdcrouter.route.wire import header

from .oracle import Oracle, expected_routing
from .routekit import RouteEnv, decode_filtered, read_topic, write_filters

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("kafka", "registry")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _router(env: RouteEnv, **opts: Any) -> Router:
    return Router(env.filters_path, env.conns, RouterOptions(raw_topic=env.raw, **opts))


def _expected(
    env: RouteEnv, events: list[dict[str, Any]], text: str | None = None
) -> dict[str, Counter[str]]:
    """Topic -> Counter of event uuids, by the independent oracle (not the engine's compiled filters)."""
    return expected_routing(text or env.filters_path.read_text(), events, env.filtered_topics)


def _actual(env: RouteEnv) -> dict[str, Counter[str]]:
    return {
        t: Counter(decode_filtered(m.value())["eventHeader"]["uuid"] for m in read_topic(env.kafka(), t))
        for t in env.filtered_topics
    }


def test_routes_every_match_once_with_metadata(route_env: RouteEnv) -> None:
    env = route_env
    events = env.produce(0, 3_000)
    before = time.time_ns() // 1_000_000
    port = _free_port()
    router = _router(env, group_id=env.prefix + "g", metrics_port=port)
    stats = router.run(max_events=3_000, idle_timeout_s=20)
    after = time.time_ns() // 1_000_000
    assert stats.consumed == 3_000 and stats.dead_lettered == 0
    expected = _expected(env, events)
    assert sum(sum(c.values()) for c in expected.values()) == sum(stats.matched.values()) > 3_000
    by_uuid = {e["eventHeader"]["uuid"]: e for e in events}
    topic_filter = {f["outputTopic"]: f for f in Oracle(env.filters_path.read_text()).filters}
    actual: dict[str, Counter[str]] = {}
    for topic in env.filtered_topics:
        msgs = read_topic(env.kafka(), topic)
        actual[topic] = Counter()
        for m in msgs:
            rec = decode_filtered(m.value())
            uuid = rec["eventHeader"]["uuid"]
            actual[topic][uuid] += 1
            meta = rec.pop("filterMetadata")
            assert rec == by_uuid[uuid]  # the raw event, unchanged
            assert meta["filterId"] == topic_filter[topic]["id"]
            assert meta["consumerId"] == topic_filter[topic]["consumerId"]
            assert before <= meta["filteredAt"] <= after
            assert m.key() == rec["eventBody"]["entities"][0]["entityId"].encode()
    assert actual == expected
    # two filters checked by hand as well
    assert set(actual[env.prefix + "loan-created"]) == {
        u for u, e in by_uuid.items() if e["eventHeader"]["eventName"] == "LoanCreated"
    }
    assert set(actual[env.prefix + "deletes"]) == {
        u for u, e in by_uuid.items() if e["sourceMetadata"]["operation"] == "DELETE"
    }
    # per-filter counters, as Prometheus serves them
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert "cdcrouter_route_consumed_total 3000.0" in text
    for topic, counts in expected.items():
        fid = topic_filter[topic]["id"]
        if counts:
            assert f'filter_id="{fid}"' in text
            assert stats.matched[fid] == sum(counts.values())


def test_poison_records_go_to_the_dlq_and_the_stream_goes_on(route_env: RouteEnv) -> None:
    env = route_env
    poison = [
        (b"garbage", b"\x13\x37 this is not avro at all"),
        (b"unknown-id", header(2_000_000_000) + b"\x02\x04abc"),
        (b"bad-body", header(env.raw_schema_id) + b"\xff\xff\xff\xff"),
    ]
    events = env.produce(0, 500, extra=poison)
    events += env.produce(500, 500)
    stats = Router(
        env.filters_path, env.conns, RouterOptions(raw_topic=env.raw, group_id=env.prefix + "g")
    ).run(max_events=1_003, idle_timeout_s=20)
    assert stats.consumed == 1_003 and stats.dead_lettered == 3
    dlq = read_topic(env.kafka(), env.dlq)
    assert sorted(m.key() for m in dlq) == sorted(k for k, _ in poison)
    for m in dlq:
        h = dict(m.headers())
        assert h["cdcrouter.source.topic"] == env.raw.encode()
        assert int(h["cdcrouter.source.offset"]) >= 0 and int(h["cdcrouter.source.partition"]) in (0, 1, 2)
        assert m.value() == dict(poison)[m.key()]  # the original bytes, untouched
    errors = {m.key(): dict(m.headers())["cdcrouter.error"].decode() for m in dlq}
    assert "unknown magic byte" in errors[b"garbage"]
    assert "unknown schema id 2000000000" in errors[b"unknown-id"]
    assert "not a valid Avro record" in errors[b"bad-body"]
    assert _actual(env) == _expected(env, events)


def test_live_reload_swaps_filters_between_transactions(route_env: RouteEnv) -> None:
    env = route_env
    v1 = bench_filters_yaml(env.prefix, 1)  # loan-created only
    v2 = bench_filters_yaml(env.prefix, 8)  # + the next seven
    write_filters(env, v1)
    group = env.prefix + "g"
    router = Router(
        env.filters_path, env.conns, RouterOptions(raw_topic=env.raw, group_id=group, reload_check_ms=100)
    )
    stop = threading.Event()
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(router.run(stop)), daemon=True)
    t.start()
    try:
        a = env.produce(0, 1_000)
        env.wait_committed(group, 1_000)
        write_filters(env, v2)
        deadline = time.monotonic() + 30
        while router._table is None or len(router._table.routes) != 8:
            assert time.monotonic() < deadline, "filters were not reloaded"
            time.sleep(0.05)
        b = env.produce(1_000, 1_000)
        env.wait_committed(group, 2_000)
        write_filters(env, "filters:\n  - {id: broken, consumerId: x}\n")  # invalid: kept v2
        time.sleep(0.5)
        c = env.produce(2_000, 1_000)
        env.wait_committed(group, 3_000)
    finally:
        stop.set()
        t.join(60)
    assert result, "router did not stop"
    assert len(router._table.routes) == 8  # type: ignore[union-attr]
    expected = _expected(env, a, v1)
    for topic, counts in _expected(env, b + c, v2).items():
        expected[topic] += counts
    assert _actual(env) == expected
    reloads = router.metrics.registry.get_sample_value
    assert reloads("cdcrouter_route_filter_reloads_total", {"outcome": "applied"}) == 1
    assert reloads("cdcrouter_route_filter_reloads_total", {"outcome": "rejected"}) == 1


def test_two_instances_split_partitions_exactly_once(route_env: RouteEnv) -> None:
    env = route_env
    group = env.prefix + "g"
    stop = threading.Event()
    routers = [_router(env, group_id=group, instance_id=i) for i in ("a", "b")]
    threads = [threading.Thread(target=r.run, args=(stop,), daemon=True) for r in routers]
    threads[0].start()
    try:
        events = env.produce(0, 3_000)
        env.wait_committed(group, 1)
        threads[1].start()  # joins mid-stream: a rebalance with a transaction open
        events += env.produce(3_000, 3_000)
        env.wait_committed(group, 6_000)
        deadline = time.monotonic() + 30
        while not all(r.assigned for r in routers):
            assert time.monotonic() < deadline, "the second instance never got a partition"
            time.sleep(0.1)
        owned = [r.assigned for r in routers]
        assert not owned[0] & owned[1] and len(owned[0] | owned[1]) == 3
        events += env.produce(6_000, 3_000)
        env.wait_committed(group, 9_000)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert all(r.metrics.consumed > 0 for r in routers)
    assert sum(r.metrics.consumed for r in routers) == 9_000
    assert _actual(env) == _expected(env, events)


@pytest.mark.parametrize("lane", [0, 1])
def test_a_fenced_instance_takes_its_id_back_and_loses_nothing(route_env: RouteEnv, lane: int) -> None:
    """Another producer with one lane's transactional.id fences it (what the coordinator does after
    an expired transaction): the router aborts the other lane too, starts a new producer and redoes
    from the committed offsets."""
    from confluent_kafka import Producer

    env = route_env
    group = env.prefix + "g"
    router = _router(env, group_id=group, instance_id="f")
    assert len(router.opts.transactional_ids) == 2
    stop = threading.Event()
    t = threading.Thread(target=router.run, args=(stop,), daemon=True)
    t.start()
    try:
        events = env.produce(0, 3_000)
        env.wait_committed(group, 3_000)
        usurper = Producer(env.kafka(**{"transactional.id": router.opts.transactional_ids[lane]}))
        usurper.init_transactions(30)  # bumps the epoch: the router's producer is now fenced
        events += env.produce(3_000, 3_000)
        env.wait_committed(group, 6_000)
    finally:
        stop.set()
        t.join(60)
    assert not t.is_alive()
    assert _actual(env) == _expected(env, events)
    assert router.metrics.consumed == 6_000
    assert len(router._recoveries) == 1, router._recoveries


def test_fencing_one_lane_mid_stream_loses_and_doubles_nothing(route_env: RouteEnv) -> None:
    """The fence lands while events stream in and both lanes hold transactions (one committing, one
    filling): the later one must not commit past the failed one; both are redone, each event once."""
    from confluent_kafka import Producer

    env = route_env
    group = env.prefix + "g"
    router = _router(env, group_id=group, instance_id="m")
    stop = threading.Event()
    t = threading.Thread(target=router.run, args=(stop,), daemon=True)
    events: list[dict[str, Any]] = []

    fenced = threading.Event()

    def paced() -> None:  # 200-event chunks, ~2,000/s, until the fence; then the rest of 8,000 at once
        for start in range(0, 8_000, 200):
            if fenced.is_set():
                events.extend(env.produce(start, 8_000 - start))
                return
            events.extend(env.produce(start, 200))
            time.sleep(0.1)

    writer = threading.Thread(target=paced, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 60
        while not router.assigned:  # routing has begun
            assert time.monotonic() < deadline, "the router was not assigned the raw topic"
            time.sleep(0.1)
        writer.start()
        time.sleep(1.5)
        assert writer.is_alive(), "the fence did not land mid-stream"
        usurper = Producer(env.kafka(**{"transactional.id": router.opts.transactional_ids[1]}))
        usurper.init_transactions(30)
        fenced.set()
        writer.join(120)
        env.wait_committed(group, 8_000)
    finally:
        stop.set()
        t.join(60)
    assert not t.is_alive()
    assert _actual(env) == _expected(env, events)
    assert router.metrics.consumed == 8_000
    assert len(router._recoveries) == 1, router._recoveries
