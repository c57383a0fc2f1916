"""MirrorMaker 2 from region a (the shared broker) to region b (a second local cluster), on the real
processes: committed records only (an aborted transaction never reaches b), consumer group
offsets translated, and ``dr status`` lag checked against counts made here.

One MM2 process per module (its start takes ~30-45 s on a loaded 2-core box); the test's own
cluster aliases keep its internal topics apart from any other mirror on the same brokers.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cdcrouter.cli.main import main
from cdcrouter.config.connections import KafkaSettings
from cdcrouter.dr.mirror import MirrorMaker, MirrorSpec
from cdcrouter.dr.status import DrStatus, dr_status

PARTITIONS = 3


@dataclass
class Flow:
    spec: MirrorSpec
    mirror: MirrorMaker
    tag: str
    topic: str
    group: str
    consumed: dict[int, list[bytes]]  # per partition: what the group read in a before committing


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
    kafka: KafkaSettings, topic: str, isolation: str, starts: dict[int, int] | None = None
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
        out[msg.partition()].append(msg.value())
    consumer.close()
    assert len(eof) == len(parts), f"did not reach the end of {topic}"
    return out


def _wait(spec: MirrorSpec, ok, timeout_s: float = 150.0) -> DrStatus:
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


def _consume_and_commit(kafka: KafkaSettings, topic: str, group: str, count: int) -> dict[int, list[bytes]]:
    """Read ``count`` records as ``group`` (read_committed) and commit; what was read, per partition."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    consumed: dict[int, list[bytes]] = {}
    deadline = time.monotonic() + 60
    while sum(map(len, consumed.values())) < count and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and not msg.error():
            consumed.setdefault(msg.partition(), []).append(msg.value())
    consumer.commit(asynchronous=False)
    consumer.close()
    return consumed


@pytest.fixture(scope="module")
def flow(stack_with, region_b) -> Iterator[Flow]:
    a = stack_with("kafka").connections.kafka
    b = region_b.connections().kafka
    tag = uuid.uuid4().hex[:8]
    topic, group = f"dr-{tag}-orders", f"dr-{tag}-app"
    _create(a, topic, PARTITIONS)
    spec = MirrorSpec(
        a,
        b,
        topics=(topic,),
        groups=(f"dr-{tag}-.*",),
        source_alias=f"a{tag}",
        target_alias=f"b{tag}",
        rest_port=_free_port(),
    )
    mirror = MirrorMaker(spec, region_b.state_dir, name=f"mirror-{tag}")
    try:
        mirror.start(timeout_s=240)
        # while MM2 runs, as in production: MM2's checkpoint task translates a group offset from
        # the offset syncs it reads live (one committed in the middle of a backlog mirrored before
        # the task started may get no checkpoint until the group commits again)
        committed = [f"ok-{i}".encode() for i in range(30)]
        aborted = [f"ABORTED-{i}".encode() for i in range(9)]
        _produce(a, topic, f"dr-{tag}-tx", [(committed[:20], True), (aborted, False), (committed[20:], True)])
        consumed = _consume_and_commit(a, topic, group, 12)
        yield Flow(spec, mirror, tag, topic, group, consumed)
    finally:
        mirror.stop()
        admin = AdminClient({"bootstrap.servers": b.bootstrap_servers})
        mine = [t for t in admin.list_topics(timeout=10).topics if tag in t]
        if mine:
            admin.delete_topics(mine)


def test_mirror_copies_committed_records_only_and_translates_group_offsets(flow: Flow) -> None:
    status = _wait(flow.spec, _caught_up)
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

    # group offsets: in b the group resumes where it stopped in a (re-reads allowed, never a skip)
    synced = {g.partition: g.target_committed for g in status.groups if g.group == flow.group}
    assert set(synced) == set(flow.consumed), status.to_dict()
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
