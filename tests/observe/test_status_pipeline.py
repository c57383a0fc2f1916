"""`cdcrouter status` on a real pipeline: capture and the router in-process on the shared stack,
each problem it must mark produced for real, and checked against an oracle read directly from
PostgreSQL or Kafka."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from .statuskit import StatusEnv, committed, free_port, setup_env, teardown_env

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("postgres", "kafka", "registry")]


def _codes(doc: dict) -> set[str]:
    return {p["code"] for p in doc["problems"]}


def test_healthy_pipeline_shows_every_section_and_exits_0(status_env: StatusEnv) -> None:
    env = status_env
    env.start_capture()
    port = free_port()
    env.start_router(metrics_port=port)
    env.insert_cars(5)
    cars_topic = f"{env.name}-cars"
    env.wait_count(cars_topic, 10)  # 5 created + 5 updated
    with env.consuming(f"{env.name}-fleet", cars_topic) as read:  # a consumer app, running throughout
        env.wait_read(read, 10)
        with env.flowing():
            code, doc = env.status_json("--exit-code", interval=2.5)  # a window wide enough under load
        check_flowing(env, code, doc)
        check_caught_up(env, f"http://127.0.0.1:{port}/metrics")


def check_flowing(env: StatusEnv, code: int, doc: dict) -> None:
    assert code == 0, doc["problems"]
    assert doc["healthy"] is True and doc["problems"] == []
    cap = doc["capture"]
    assert cap["slot"] == env.slot and cap["active"] is True and cap["wal_status"] == "reserved"
    assert cap["kafka"]["events_total"] >= 10
    with psycopg.connect(env.conns.postgres.conninfo()) as conn:  # oracle: the server itself
        active = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (env.slot,))
        assert active.fetchone() == (True,)
    router = doc["raw_topic"]["router_group"]
    assert router["group"] == env.group
    # one member owns both raw partitions (the oracle: the pipeline asked for 2)
    assert [m["assignment"] for m in router["members"]] == [[0, 1]]
    assert router["committed_in_window"] > 0 and not router["lag_growing"]
    by_id = {f["id"]: f for f in doc["filters"]}
    assert set(by_id) == {"cars", "car-updates"}
    assert by_id["cars"]["events_per_s"] > 0 and by_id["car-updates"]["events_per_s"] > 0
    # every car change matches `cars`; only updates match `car-updates`
    assert by_id["cars"]["events_in_window"] >= by_id["car-updates"]["events_in_window"]
    groups = {g["group"]: g for t in doc["filtered_topics"] for g in t["groups"]}
    assert f"{env.name}-fleet" in groups
    # `topics apply` created every consumer's DLQ beside the router's and capture's: all empty
    assert {d["name"]: d["depth"] for d in doc["dead_letter_topics"]} == {
        f"{env.raw}.router.dlq": 0,
        f"{env.raw}.capture-dlq": 0,
        f"{env.name}-cars.fleet.dlq": 0,
        f"{env.name}-car-updates.audit.dlq": 0,
    }
    lat = {x["filter_id"]: x for x in doc["latency"]}
    assert lat["cars"]["samples"] > 0
    # routed after the source commit, and on this machine within a minute
    assert 0 <= lat["cars"]["p50_ms"] <= lat["cars"]["max_ms"] < 60_000


def check_caught_up(env: StatusEnv, metrics_url: str) -> None:
    """Caught up and idle: no lag, although on these transactional topics the router's committed
    offsets stop short of the end (the commit marker after its last record is no record)."""
    last = env.last_offsets(env.raw)  # the oracle: where the raw records really end
    deadline = time.monotonic() + 60
    while True:
        done = committed(env.conns, env.group, env.raw, [0, 1])
        if all(done[p] > off for p, off in last.items()):
            break
        assert time.monotonic() < deadline, f"the router did not catch up in 60 s: {done} vs {last}"
        time.sleep(0.2)
    code, doc = env.status_json("--exit-code", "--router-metrics", metrics_url)
    router = doc["raw_topic"]["router_group"]
    assert code == 0, doc["problems"]
    assert router["lag"] == 0 and any(r["end"] > r["committed"] for r in router["partitions"]), router
    # routed totals from the router's metrics, against the records in each filter's topic
    totals = {f["id"]: f["routed_total"] for f in doc["filters"]}
    assert totals == {
        "cars": env.count(f"{env.name}-cars"),
        "car-updates": env.count(f"{env.name}-car-updates"),
    }

    code, text = env.status()
    assert code == 0
    for heading in ("Capture", f"Raw topic {env.raw}", "Filters", "Dead-letter topics", "healthy"):
        assert heading in text


def test_stopped_router_lag_grows_and_is_marked(status_env: StatusEnv) -> None:
    env = status_env
    env.start_capture()
    env.start_router()
    env.insert_cars(2)
    env.wait_count(f"{env.name}-cars", 4)  # all 4 raw events routed (each matches `cars`)
    env.halt("router")
    routed = env.count(env.raw)
    assert routed == 4
    with env.flowing(every_s=0.05):  # raw records keep arriving; nobody routes them
        env.wait_count(env.raw, routed + 2)  # some already wait when the view starts
        code, doc = env.status_json("--exit-code", interval=2.5)  # a window wide enough under load

    assert code == 3
    router = doc["raw_topic"]["router_group"]
    assert router["members"] == [] and router["committed_in_window"] == 0
    # oracle: the raw records written after the router stopped, counted afterwards
    unrouted = env.count(env.raw) - routed
    assert 0 < router["lag_before"] < router["lag"] <= unrouted
    assert router["lag_growing"] is True
    marked = [p for p in doc["problems"] if p["code"] == "router_lag_growing"]
    assert len(marked) == 1 and env.group in marked[0]["where"]


def test_poison_record_goes_to_the_router_dlq_and_is_marked(status_env: StatusEnv) -> None:
    from confluent_kafka import Producer

    env = status_env
    env.start_router()
    producer = Producer(env.conns.kafka.producer_conf())
    producer.produce(env.raw, b"not avro at all", b"k")  # undecodable: the router dead-letters it
    assert producer.flush(30) == 0
    dlq = f"{env.raw}.router.dlq"
    env.wait_count(dlq, 1)  # oracle: read the DLQ itself

    code, doc = env.status_json("--exit-code", capture=False)

    assert code == 3
    assert doc["capture"] is None  # no pipeline file: routing only, the capture DLQ unknown
    depths = {d["name"]: d["depth"] for d in doc["dead_letter_topics"]}
    assert depths[dlq] == 1
    marked = [p for p in doc["problems"] if p["code"] == "dlq_not_empty"]
    assert [p["where"] for p in marked] == [dlq]
    # the router moved past it: no lag, nothing else wrong with routing
    assert doc["raw_topic"]["router_group"]["lag"] == 0
    assert "router_lag_growing" not in _codes(doc) and "router_stalled" not in _codes(doc)


def test_stopped_capture_leaves_an_inactive_slot_whose_wal_grows(status_env: StatusEnv) -> None:
    env = status_env
    env.start_capture()
    env.insert_cars(2)
    env.wait_count(env.raw, 4)
    env.halt("capture")

    def slot() -> tuple[bool, int]:  # the oracle: the server's own view, read around the status
        with psycopg.connect(env.conns.postgres.conninfo()) as conn:
            row = conn.execute(
                "SELECT active, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint"
                " FROM pg_replication_slots WHERE slot_name = %s",
                (env.slot,),
            ).fetchone()
        assert row is not None
        return row[0], row[1]

    deadline = time.monotonic() + 30
    while slot()[0]:  # the walsender ends a moment after capture closes its connection
        assert time.monotonic() < deadline, "the slot stayed active 30 s after capture stopped"
        time.sleep(0.1)
    with env.flowing(every_s=0.05):  # the application keeps writing: the slot must keep that WAL
        _, before = slot()
        code, doc = env.status_json("--exit-code")
        _, after = slot()

    assert code == 3
    cap = doc["capture"]
    assert cap["active"] is False and "slot_inactive" in _codes(doc)
    assert before <= cap["retained_wal_bytes"] <= after
    assert 0 < cap["retained_wal_growth_bytes"] <= after - before
    # its committed Kafka position still shows where capture stopped
    assert cap["kafka"]["events_total"] >= 4


def test_a_running_snapshot_shows_its_progress(status_env: StatusEnv) -> None:
    """Rows that exist before the slot are snapshotted chunk by chunk while streaming; the view
    shows how far the snapshot has got (capture status's own figures) while it runs."""
    from ruamel.yaml import YAML

    env = status_env
    with psycopg.connect(env.conns.postgres.conninfo()) as conn:
        conn.execute(
            f'INSERT INTO "{env.schema}".car_entities (id, vin, make, model)'
            " SELECT 'S' || i, 'V' || i, 'Volvo', 'XC40' FROM generate_series(1, 6000) i"
        )
        conn.execute(f'ANALYZE "{env.schema}".car_entities')  # the planner's estimate: the total
    yaml = YAML(typ="safe")
    spec = yaml.load(env.pipeline_file.read_text())
    spec["replication"].update(snapshot="initial", snapshot_chunk_size=10)  # 600 chunks: seconds
    with env.pipeline_file.open("w") as fh:
        yaml.dump(spec, fh)
    env.start_capture(until_snapshot_done=False)

    code, doc = env.status_json(interval=0.5)

    assert code == 0
    snap = doc["capture"]["snapshot"]
    assert snap is not None, "the snapshot finished before the view read it"
    assert snap["table"].endswith("car_entities") and 0 <= snap["rows"] < 6000
    assert snap["estimated_rows"] == 6000
    rendered = env.status(interval=0.5)[1]
    assert "Snapshot in progress" in rendered and "6,000" in rendered  # the estimate


def test_a_lost_slot_is_marked(
    stack: Any, private_pg: Any, unique_name: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL removes WAL a stopped capture's slot needs (max_slot_wal_keep_size): the view
    shows wal_status lost and marks it. A private server: its settings are changed."""
    pg = private_pg.connections().postgres
    conns = stack.connections.model_copy(update={"postgres": pg})
    env = setup_env(conns, unique_name("st"), tmp_path)
    try:
        env.start_capture()
        env.insert_cars(1)
        env.wait_count(env.raw, 2)
        env.halt("capture")
        with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
            conn.execute("SELECT pg_reload_conf()")
            for _ in range(4):  # WAL the stopped capture falls behind on, one segment at a time
                conn.execute("SELECT pg_logical_emit_message(false, 'filler', repeat('x', 2000000))")
                conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")
            row = conn.execute(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", (env.slot,)
            )
            assert row.fetchone() == ("lost",), "the server did not invalidate the slot"  # the oracle
        for key, value in pg.model_dump().items():
            if value is not None:
                secret = value.get_secret_value() if hasattr(value, "get_secret_value") else value
                monkeypatch.setenv(f"CDCROUTER_POSTGRES__{key.upper()}", str(secret))

        code, doc = env.status_json("--exit-code")

        assert code == 3
        assert doc["capture"]["wal_status"] == "lost"
        assert [p["where"] for p in doc["problems"] if p["code"] == "slot_wal_lost"] == [env.slot]
    finally:
        teardown_env(env)
