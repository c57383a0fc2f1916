"""MirrorMaker 2 from region a (the shared broker) to region b (a second local cluster), on the real
processes: committed records only (an aborted transaction never reaches b), consumer group
offsets translated, and ``dr status`` lag checked against counts made here.

One MM2 process per module (its start takes ~30-45 s on a loaded 2-core box); the test's own
cluster aliases keep its internal topics apart from any other mirror on the same brokers.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from cdcrouter.capture.engine import CaptureEngine
from cdcrouter.capture.pgoutput import str_to_lsn
from cdcrouter.capture.pipeline import RawTopic, pipeline_from_dict
from cdcrouter.capture.sink import read_offsets
from cdcrouter.cli.main import main
from cdcrouter.config.connections import KafkaSettings
from cdcrouter.dr.mirror import MirrorMaker, MirrorSpec
from cdcrouter.dr.status import DrStatus, dr_status, translated_offsets, wait_caught_up, wait_task

PARTITIONS = 3


@dataclass
class Flow:
    spec: MirrorSpec
    mirror: MirrorMaker
    tag: str
    topic: str
    group: str
    consumed: dict[int, list[bytes]]  # per partition: what the group read in a before committing
    raw: RawTopic


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _create(kafka: KafkaSettings, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    for fut in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        fut.result(30)


def _produce(kafka: KafkaSettings, topic: str, txn_id: str, batches: list[tuple[list[bytes], bool]]) -> None:
    """Transactions of ``(values, commit?)``; keys spread the values over the partitions."""
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "transactional.id": txn_id})
    producer.init_transactions(30)
    for values, commit in batches:
        producer.begin_transaction()
        for value in values:
            producer.produce(topic, value, key=value)
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)


def _read(
    kafka: KafkaSettings,
    topic: str,
    isolation: str,
    starts: dict[int, int] | None = None,
    with_offsets: bool = False,
) -> dict[int, list]:
    """Every record per partition (values), from ``starts`` (default the beginning) to the end."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "enable.partition.eof": True,
        }
    )
    parts = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    starts = starts or {}
    consumer.assign([TopicPartition(topic, p, starts.get(p, 0)) for p in parts])
    out: dict[int, list] = {p: [] for p in parts}
    eof: set[int] = set()
    deadline = time.monotonic() + 60
    while len(eof) < len(parts) and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            eof.add(msg.partition())
            continue
        out[msg.partition()].append((msg.offset(), msg.value()) if with_offsets else msg.value())
    consumer.close()
    assert len(eof) == len(parts), f"did not reach the end of {topic}"
    return out


def _wait(spec: MirrorSpec, ok, timeout_s: float = 60.0) -> DrStatus:
    deadline = time.monotonic() + timeout_s
    while True:
        status = dr_status(spec)
        if ok(status) or time.monotonic() > deadline:
            return status
        time.sleep(2)


def _caught_up(status: DrStatus) -> bool:
    return (
        bool(status.partitions)
        and status.max_records == 0
        and not status.missing_in_target
        and bool(status.groups)
        and status.max_group_offsets == 0
    )


def _commit(kafka: KafkaSettings, group: str, offsets: dict[tuple[str, int], int]) -> None:
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": group})
    consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
    consumer.close()


def _read_offsets(kafka: KafkaSettings, topic: str) -> dict[int, list[tuple[int, bytes]]]:
    """Committed records per partition as (offset, value)."""
    return _read(kafka, topic, "read_committed", with_offsets=True)


@pytest.fixture(scope="module")
def flow(stack_with, region_b) -> Iterator[Flow]:
    a = stack_with("kafka").connections.kafka
    b = region_b.connections().kafka
    tag = uuid.uuid4().hex[:8]
    topic, group = f"dr-{tag}-orders", f"dr-{tag}-app"
    raw = RawTopic(name=f"dr-{tag}-raw", partitions=1)  # capture creates it (the gate test)
    _create(a, topic, PARTITIONS)
    spec = MirrorSpec(
        a,
        b,
        topics=(topic, raw.name, raw.offsets_topic),
        groups=(f"dr-{tag}-.*",),
        source_alias=f"a{tag}",
        target_alias=f"b{tag}",
        rest_port=_free_port(),
    )
    mirror = MirrorMaker(spec, region_b.state_dir, name=f"mirror-{tag}")
    try:
        mirror.start(timeout_s=240)
        committed = [f"ok-{i}".encode() for i in range(30)]
        aborted = [f"ABORTED-{i}".encode() for i in range(9)]
        _produce(a, topic, f"dr-{tag}-tx", [(committed[:20], True), (aborted, False)])
        # MM2 checkpoints a group only from offset syncs its checkpoint task reads live (syncs it
        # finds at its start are compacted to the newest), and it starts that task once a group
        # exists: the group commits, the task starts, then the group commits inside new data
        _commit(a, group, {(topic, p): 0 for p in range(PARTITIONS)})
        wait_task(spec, "MirrorCheckpointConnector", timeout_s=180)
        _produce(a, topic, f"dr-{tag}-tx", [(committed[20:], True)])
        offsets = _read_offsets(a, topic)
        consumed: dict[int, list[bytes]] = {}
        commit: dict[tuple[str, int], int] = {}
        for part, records in offsets.items():
            second = [off for off, value in records if value >= b"ok-2" and len(value) == 5][:2]
            upto = second[-1] if second else records[-1][0] + 1  # mid-batch-2, or the end
            commit[(topic, part)] = upto
            consumed[part] = [value for off, value in records if off < upto]
        _commit(a, group, commit)
        yield Flow(replace(spec, topics=(topic,)), mirror, tag, topic, group, consumed, raw)
    finally:
        mirror.stop()
        for scratch in (
            mirror.home,
            region_b.state_dir / f"json-{tag}",
            region_b.state_dir / f"status-{tag}",
        ):
            shutil.rmtree(scratch, ignore_errors=True)
        mirror.log_file.unlink(missing_ok=True)
        for kafka in (a, b):
            admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
            mine = [t for t in admin.list_topics(timeout=10).topics if tag in t]
            if mine:
                admin.delete_topics(mine)


def test_mirror_copies_committed_records_only_and_translates_group_offsets(flow: Flow) -> None:
    wait_caught_up(flow.spec, timeout_s=150)
    # MM2 writes the translated offsets into b's __consumer_offsets a sync interval later
    status = _wait(
        flow.spec, lambda s: _caught_up(s) and all(g.target_committed is not None for g in s.groups)
    )
    assert _caught_up(status), json.dumps(status.to_dict(), indent=1)
    a, b = flow.spec.source, flow.spec.target
    # the test can fail: a really holds the aborted records (read_uncommitted sees them)
    assert any(
        v.startswith(b"ABORTED") for vs in _read(a, flow.topic, "read_uncommitted").values() for v in vs
    )
    committed_a = _read(a, flow.topic, "read_committed")
    in_b = _read(b, flow.topic, "read_uncommitted")  # even records of an aborted MM2 transaction
    assert in_b == committed_a, "b must hold exactly a's committed records, in a's order per partition"
    assert sum(map(len, in_b.values())) == 30
    # MM2 writes nothing into region a (no herder for the disabled b -> a flow)
    a_topics = AdminClient({"bootstrap.servers": a.bootstrap_servers}).list_topics(timeout=10).topics
    assert not [t for t in a_topics if flow.spec.target_alias in t]
    # MM2's state topics that dr status and the mirror gate read in full stay compacted and small
    admin = AdminClient({"bootstrap.servers": b.bootstrap_servers})
    for topic in (flow.spec.offsets_topic, flow.spec.checkpoints_topic):
        res = ConfigResource(ConfigResource.Type.TOPIC, topic)
        config = admin.describe_configs([res])[res].result(30)
        assert (config["cleanup.policy"].value, config["segment.ms"].value) == ("compact", "600000"), topic

    # group offsets: in b the group resumes where it stopped in a (re-reads allowed, never a skip)
    synced = {g.partition: g.target_committed for g in status.groups if g.group == flow.group}
    assert set(synced) == set(flow.consumed), status.to_dict()
    # the checkpoints (what failover translates with) agree with the offsets MM2 synced into b
    assert translated_offsets(flow.spec, flow.group) == {(flow.topic, p): o for p, o in synced.items()}
    resumed = _read(
        b, flow.topic, "read_committed", starts={p: o for p, o in synced.items() if o is not None}
    )
    for part, values in committed_a.items():
        seen = flow.consumed.get(part, [])
        unread = values[len(seen) :]
        got = resumed[part]
        assert got[len(got) - len(unread) :] == unread, f"partition {part}: a record was skipped"
        assert got[: len(got) - len(unread)] == seen[len(seen) - (len(got) - len(unread)) :]
        assert len(got) - len(unread) <= 2, f"partition {part}: {len(got) - len(unread)} re-reads"


def test_dr_status_counts_lag_against_produced_records(flow: Flow, monkeypatch, region_b) -> None:
    """A topic present in both regions but not mirrored: every committed record in a is behind."""
    a, b = flow.spec.source, flow.spec.target
    lagging = f"dr-{flow.tag}-lagging"
    _create(a, lagging, 2)
    _create(b, lagging, 2)
    first_ms = time.time() * 1000
    _produce(
        a,
        lagging,
        f"dr-{flow.tag}-tx2",
        [([f"x-{i}".encode() for i in range(7)], True), ([b"ABORTED"] * 4, False), ([b"y-0", b"y-1"], True)],
    )
    produced = _read(a, lagging, "read_committed")  # the oracle: what a committed, per partition
    spec = replace(flow.spec, topics=(flow.topic, lagging))
    status = _wait(spec, lambda s: s.max_group_offsets == 0)
    by_part = {p.partition: p for p in status.partitions if p.topic == lagging}
    assert {k: v.behind_records for k, v in by_part.items()} == {k: len(v) for k, v in produced.items()}
    assert all(p.exact for p in by_part.values())
    waited = (time.time() * 1000 - first_ms) / 1000
    oldest = max(p.behind_seconds for p in by_part.values())
    assert 0 < oldest <= waited + 1
    assert all(p.behind_records == 0 for p in status.partitions if p.topic == flow.topic)

    # the CLI reads the flow from its saved mirror.json; thresholds decide the exit code
    home = region_b.state_dir / f"status-{flow.tag}"
    home.mkdir(parents=True, exist_ok=True)
    (home / "mirror.json").write_text(spec.to_json("a", "b"))
    monkeypatch.setenv("CDCROUTER_STATE_DIR", str(region_b.state_dir.parent))
    args = ["dr", "status", "--name", f"status-{flow.tag}", "--json"]
    assert main([*args, "--max-lag-records", "0"]) == 3
    assert main([*args, "--max-lag-records", "9"]) == 0
    assert main([*args, "--max-lag-records", "100", "--max-lag-seconds", "0"]) == 3


def test_dr_status_json_shape(flow: Flow, capsys, monkeypatch, region_b) -> None:
    home = region_b.state_dir / f"json-{flow.tag}"
    home.mkdir(parents=True, exist_ok=True)
    (home / "mirror.json").write_text(flow.spec.to_json("a", "b"))
    monkeypatch.setenv("CDCROUTER_STATE_DIR", str(region_b.state_dir.parent))
    assert main(["dr", "status", "--name", f"json-{flow.tag}", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (
        doc["mirror_state"] == "not running"
    )  # nothing runs under that name, whatever the status topic says
    assert {p["topic"] for p in doc["partitions"]} == {flow.topic}
    assert doc["alerts"] == []


def _confirmed(dsn: str, slot: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()
    assert row is not None, f"no slot {slot}"
    return str_to_lsn(row[0])


def _run_capture(pipeline, conns) -> tuple[CaptureEngine, threading.Thread, threading.Event]:
    engine = CaptureEngine(pipeline, conns, progress=lambda _m: None)
    stop = threading.Event()
    thread = threading.Thread(target=engine.run, args=(stop,), daemon=True)
    thread.start()
    assert engine.ready.wait(60), "capture did not start streaming within 60 s"
    return engine, thread, stop


def _stop_capture(run: tuple[CaptureEngine, threading.Thread, threading.Event]) -> None:
    run[2].set()
    run[1].join(60)
    assert not run[1].is_alive(), "capture did not stop within 60 s"


def _committed_end(conns, pipeline, rows: int, timeout_s: float = 60) -> int:
    """The end LSN of capture's committed position in region A once it covers ``rows`` events."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = read_offsets(conns, pipeline.raw_topic.offsets_topic, pipeline.replication.slot)
        if got is not None and got.events_total >= rows:
            return got.end_lsn
        assert time.monotonic() < deadline, f"capture did not commit {rows} events ({got})"
        time.sleep(0.5)


def test_capture_confirms_the_slot_only_up_to_what_region_b_holds(
    flow: Flow, stack_with, region_b, monkeypatch
) -> None:
    """dr.confirm_after_mirror: with no mirror behind the alias the slot stays put although region
    A has committed the changes; with the running mirror it follows once region B holds them."""
    conns = stack_with("postgres", "kafka").connections
    monkeypatch.setenv("CDCROUTER_STATE_DIR", str(region_b.state_dir.parent))  # region b's endpoints
    schema, dsn = f"dr_{flow.tag}", conns.postgres.conninfo()
    slot = f"dr_{flow.tag}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.accounts (id int PRIMARY KEY, owner text)")

    def pipeline(alias: str):
        return pipeline_from_dict(
            {
                "schema": schema,
                "raw_topic": {"name": flow.raw.name, "partitions": 1},
                "replication": {"slot": slot, "publication": f"p_{flow.tag}"},
                "batching": {"max_ms": 20},
                "heartbeat_interval_s": 0.3,
                "tables": {"accounts": {}},
                "dr": {"confirm_after_mirror": True, "region": "b", "source_alias": alias},
            }
        )

    def insert(first: int, count: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(first, first + count):
                conn.execute(f"INSERT INTO {schema}.accounts VALUES (%s, %s)", (i, f"owner-{i}"))

    held = pipeline(f"nobody{flow.tag}")  # no MM2 runs under this alias: nothing is proven in b
    try:
        run = _run_capture(held, conns)
        try:
            start = _confirmed(dsn, slot)
            insert(0, 5)
            end_a = _committed_end(conns, held, 5)
            assert end_a > start
            time.sleep(3)  # ten heartbeats: the old code confirmed end_a (or the WAL end) by now
            confirmed = _confirmed(dsn, slot)  # (not inside the assert: pytest would print the DSN)
            assert confirmed < end_a, "the slot moved past changes region b does not hold"
        finally:
            _stop_capture(run)

        mirrored = pipeline(flow.spec.source_alias)  # the module's running MM2
        run = _run_capture(mirrored, conns)
        try:
            insert(5, 5)
            end_a = _committed_end(conns, mirrored, 10)
            deadline = time.monotonic() + 120
            while _confirmed(dsn, slot) < end_a:
                assert time.monotonic() < deadline, "the slot did not follow once region b held the changes"
                time.sleep(1)
        finally:
            _stop_capture(run)
        # oracle: region b really holds every change and the position the slot was confirmed at
        in_b = _read(flow.spec.target, flow.raw.name, "read_committed")
        assert sum(map(len, in_b.values())) == 10
        position_b = read_offsets(
            conns.model_copy(update={"kafka": flow.spec.target}), flow.raw.offsets_topic, slot
        )
        assert position_b is not None and position_b.end_lsn >= end_a
    finally:
        with contextlib.suppress(Exception), psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            conn.execute(f"DROP PUBLICATION IF EXISTS p_{flow.tag}")
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
