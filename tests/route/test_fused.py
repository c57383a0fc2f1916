"""Fused mode (``cdcrouter capture run --route``): raw record, filtered records and capture position
in one Kafka transaction.

Checked against oracles other than the code under test: the rows PostgreSQL committed (the
generator's own list), the independent routing oracle (tests/route/oracle.py) for which filters
match, and fastavro's full encode of the filtered record for its bytes.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastavro
import psycopg
import pytest
from ruamel.yaml import YAML

from capture.capture_helpers import RegistryDecoder, drop_capture_objects, make_pipeline
from cdcrouter.capture import apply_domain
from cdcrouter.capture.fused import FusedSink
from cdcrouter.capture.normalize import event_key
from cdcrouter.capture.sink import (
    AvroEncoder,
    Offsets,
    TransactionalSink,
    ensure_topics,
    read_offsets,
    register_raw_schema,
)
from cdcrouter.route.events import make_event
from cdcrouter.route.fused import FusedRoutes
from cdcrouter.schemas import parsed_filtered_schema
from cdcrouter.schemas.registry import RegistryClient, apply_schemas, desired_subjects, plan_schemas
from cdcrouter.topics import admin_client, apply_topics, plan_topics, topics_for
from cdcrouter_testing.slots import wait_slot_active
from cdcrouter_testing.workloads import write_car_rounds

from .oracle import expected_routing
from .routekit import read_topic

pytestmark = pytest.mark.integration

CARS, ROUNDS, PER_TXN = 400, 14, 50  # 400 inserts + 5,600 updates = 6,000 changes
TOTAL = CARS * (ROUNDS + 1)

FILTERS = """\
filters:
  - id: new-cars
    consumerId: c-new
    outputTopic: {p}new
    conditions:
      - field: sourceMetadata.operation
        operator: equals
        value: INSERT
  - id: late-years
    consumerId: c-late
    outputTopic: {p}late
    conditions:
      - field: eventBody.entities[0].updatedAttributes.model_year
        operator: greaterThanOrEqual
        value: 10
        valueType: number
  - id: even-cars
    consumerId: c-even
    outputTopic: {p}even
    conditions:
      - field: eventBody.entities[0].entityId
        operator: matches
        value: "[02468]$"
  - id: big-notes
    consumerId: c-notes
    outputTopic: {p}notes
    conditions:
      - field: eventBody.entities[0].updatedAttributes.notes
        operator: isNotNull
"""


class Fused:
    def __init__(self, conns: Any, name: str, tmp: Path) -> None:
        self.conns, self.name, self.tmp = conns, name, tmp
        self.schema = name.replace("-", "_")
        self.prefix = f"{name}-"
        self.pipeline = make_pipeline(
            self.schema,
            name,
            raw_topic={"name": f"{self.prefix}raw", "partitions": 3},
            batching={"max_events": 2000, "max_ms": 50},
            tables={"car_entities": {"entity_type": "Car"}},
            outbox=None,
        )
        self.filters_text = FILTERS.format(p=self.prefix)
        self.filters = tmp / "filters.yaml"
        self.filters.write_text(self.filters_text)
        self.pfile = tmp / "pipeline.yaml"
        doc = self.pipeline.model_dump(
            by_alias=True, exclude={"source_file", "connections"}, exclude_none=True
        )
        YAML().dump(doc, self.pfile)
        apply_domain(conns.postgres.conninfo(), self.schema)
        specs = topics_for(self.filters, raw_topic=self.pipeline.raw_topic.name)
        admin = admin_client(conns.kafka.to_librdkafka())
        apply_topics(admin, plan_topics(admin, specs))
        self.topics = sorted(s.name for s in specs if s.role == "filtered")
        self.all_topics = [s.name for s in specs]
        with RegistryClient(conns.registry.to_client_conf()) as reg:
            self.ids = apply_schemas(reg, plan_schemas(reg, desired_subjects(self.raw, self.topics)))

    @property
    def raw(self) -> str:
        return self.pipeline.raw_topic.name

    def capture(self, log: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cdcrouter.cli.main",
                "capture",
                "run",
                "-p",
                str(self.pfile),
                "--route",
                str(self.filters),
            ],
            env={**os.environ},
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
        )

    def sql(self) -> psycopg.Connection:
        return psycopg.connect(self.conns.postgres.conninfo(), options=f"-c search_path={self.schema}")

    def wait_active(self, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 90) -> None:
        slot = self.pipeline.replication.slot
        wait_slot_active(self.conns.postgres.conninfo(), slot, proc=proc, log=log, timeout_s=timeout_s)

    def committed_total(self) -> int:
        got = read_offsets(self.conns, self.pipeline.raw_topic.offsets_topic, self.pipeline.replication.slot)
        return got.events_total if got is not None else 0


@pytest.fixture
def fused(stack: Any, unique_name: Callable[[str], str], tmp_path: Path) -> Iterator[Fused]:
    f = Fused(stack.connections, unique_name("fu"), tmp_path)
    yield f
    drop_capture_objects(f.conns, f.pipeline, f.schema, [t for t in f.all_topics if t != f.raw])


def _generate(f: Fused) -> None:
    with f.sql() as conn:  # ~6 s of stream, so the kill lands mid-way even on a quiet machine
        write_car_rounds(conn, cars=CARS, rounds=ROUNDS, per_txn=PER_TXN, pause_s=0.05)


def _raw_events(f: Fused, expect: int) -> list[tuple[bytes, dict[str, Any], bytes]]:
    decoder = RegistryDecoder(f.conns.registry.url)
    msgs = read_topic(f.conns.kafka.to_librdkafka(), f.raw, timeout=120)
    assert len(msgs) >= expect, f"{len(msgs)} raw records, expected {expect}"
    return [(m.key(), decoder.decode(m.value()), m.value()) for m in msgs]


def _check_filtered(f: Fused, raw: list[tuple[bytes, dict[str, Any], bytes]]) -> None:
    """Each filtered topic holds exactly the oracle's events, each once, and each value is the
    router's wire format: fastavro's encode of the raw event plus its filterMetadata, framed with the
    topic's registered filtered schema id (the raw body passed through untouched)."""
    events = [e for _, e, _ in raw]
    expected = expected_routing(f.filters_text, events, f.topics)
    by_uuid = {e["eventHeader"]["uuid"]: (k, e, v) for k, e, v in raw}
    schema = parsed_filtered_schema()
    checked = 0
    for topic in f.topics:
        msgs = read_topic(f.conns.kafka.to_librdkafka(), topic, timeout=120)
        got: Counter[str] = Counter()
        for m in msgs:
            value = m.value()
            assert value[:5] == b"\x00" + f.ids[f"{topic}-value"].to_bytes(4, "big"), topic
            record = fastavro.schemaless_reader(io.BytesIO(value[5:]), schema, None)
            uuid = record["eventHeader"]["uuid"]
            got[uuid] += 1
            _key, event, raw_value = by_uuid[uuid]
            assert m.key() == event["eventBody"]["entities"][0]["entityId"].encode()
            meta = record["filterMetadata"]
            assert (meta["consumerId"], topic) in {
                ("c-new", f"{f.prefix}new"),
                ("c-late", f"{f.prefix}late"),
                ("c-even", f"{f.prefix}even"),
                ("c-notes", f"{f.prefix}notes"),
            }
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, schema, {**event, "filterMetadata": meta})
            assert value[5:] == buf.getvalue(), "not the router's bytes"
            assert value[5 : len(raw_value)] == raw_value[5:], "the raw body was not passed through"
            checked += 1
        assert got == expected[topic], (
            f"{topic}: {sum((got - expected[topic]).values())} extra or doubled, "
            f"{sum((expected[topic] - got).values())} missing"
        )
    assert checked > TOTAL // 2  # the filters matched something worth checking


def test_kill_9_mid_stream_fused_exactly_once(fused: Fused, tmp_path: Path) -> None:
    f, log = fused, tmp_path / "capture.log"
    first = f.capture(log)
    try:
        f.wait_active(first, log)
        gen = threading.Thread(target=_generate, args=(f,))
        gen.start()
        deadline = time.monotonic() + 60
        while f.committed_total() == 0:  # kill once a first transaction committed, not before
            assert time.monotonic() < deadline and gen.is_alive(), f"nothing committed: {log}"
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)  # raw, filtered and position were all in flight
        first.wait(30)
        gen.join(300)
    finally:
        if first.poll() is None:
            first.kill()
    before = f.committed_total()
    assert 0 < before < TOTAL, f"the kill did not land mid-stream ({before}); see {log}"

    second = f.capture(log)
    try:
        deadline = time.monotonic() + 180
        while f.committed_total() < TOTAL:
            assert time.monotonic() < deadline, f"not caught up: {log.read_text()[-2000:]}"
            assert second.poll() is None, f"capture died: {log.read_text()[-2000:]}"
            time.sleep(0.5)
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0, log.read_text()[-2000:]
    finally:
        if second.poll() is None:
            second.kill()

    raw = _raw_events(f, TOTAL)
    uuids = Counter(e["eventHeader"]["uuid"] for _, e, _ in raw)
    assert len(raw) == TOTAL and len(uuids) == TOTAL, f"{len(raw)} raw records, {len(uuids)} distinct"
    with f.sql() as conn:  # the database's own word for what was committed
        years = dict(conn.execute("SELECT id, model_year FROM car_entities").fetchall())
    assert len(years) == CARS and set(years.values()) == {ROUNDS}
    _check_filtered(f, raw)
    assert "fused mode" in log.read_text()


def test_too_large_for_a_filtered_topic_goes_to_the_router_dlq(fused: Fused, tmp_path: Path) -> None:
    """A record one filtered topic cannot take is dead-lettered once to <raw>.router.dlq (the
    router's headers) and still reaches the raw topic and the other filters' topics."""
    f, log = fused, tmp_path / "capture.log"
    admin = admin_client(f.conns.kafka.to_librdkafka())
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        f"{f.prefix}notes",
        incremental_configs=[
            ConfigEntry("max.message.bytes", "4000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for fut in admin.incremental_alter_configs([res]).values():
        fut.result(30)
    proc = f.capture(log)
    try:
        f.wait_active(proc, log)
        with f.sql() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO car_entities (id, vin, make, model, model_year, notes) VALUES "
                "('C0002', 'V', 'M', 'X', 11, %s), ('C0004', 'V', 'M', 'X', 12, 'short')",
                ("n" * 6000,),
            )
        deadline = time.monotonic() + 60
        while f.committed_total() < 2:
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-2000:]
    raw = _raw_events(f, 2)
    assert len(raw) == 2
    letters = read_topic(f.conns.kafka.to_librdkafka(), f"{f.raw}.router.dlq")
    assert len(letters) == 1
    headers = dict(letters[0].headers())
    assert headers["cdcrouter.filters"] == b"big-notes"
    assert (
        b"larger than" in headers["cdcrouter.error"] and headers["cdcrouter.source.topic"] == f.raw.encode()
    )
    assert letters[0].value() == next(v for k, _e, v in raw if k == b"C0002")
    counts = {t: len(read_topic(f.conns.kafka.to_librdkafka(), t)) for t in f.topics}
    # C0002 went to new, late, even; its notes record did not fit; C0004 everywhere
    assert counts == {f"{f.prefix}new": 2, f"{f.prefix}late": 2, f"{f.prefix}even": 2, f"{f.prefix}notes": 1}


def test_filters_reload_between_transactions(fused: Fused, tmp_path: Path) -> None:
    """A changed filters.yaml applies from the next Kafka transaction on; an invalid one is
    rejected and the filters before it stay (the router's reload, shared)."""
    f, log = fused, tmp_path / "capture.log"

    def insert(*ids: str) -> None:
        with f.sql() as conn, conn.transaction():
            for i in ids:
                conn.execute(
                    "INSERT INTO car_entities (id, vin, make, model) VALUES (%s, 'V', 'M', 'X')", (i,)
                )

    def wait_committed(n: int) -> None:
        deadline = time.monotonic() + 60
        while f.committed_total() < n:
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.2)

    def swap(text: str) -> None:
        tmp = f.filters.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(f.filters)
        time.sleep(1.2)  # past the 500 ms check interval: the next transaction reloads

    proc = f.capture(log)
    try:
        f.wait_active(proc, log)
        insert("C0001", "C0002")  # even-cars: C0002
        wait_committed(2)
        swap(f.filters_text.replace('"[02468]$"', '"[13579]$"'))
        insert("C0003", "C0004")  # odd now: C0003
        wait_committed(4)
        swap("filters: [unclosed\n")
        insert("C0005", "C0006")  # rejected file: still odd, C0005
        wait_committed(6)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-2000:]
    even = read_topic(f.conns.kafka.to_librdkafka(), f"{f.prefix}even")
    assert sorted(m.key() for m in even) == [b"C0002", b"C0003", b"C0005"]
    assert len(read_topic(f.conns.kafka.to_librdkafka(), f"{f.prefix}new")) == 6
    assert "filters reload rejected" in log.read_text()


class _EosLogged(FusedSink):
    """The product's fused sink, with librdkafka's transaction debug log on (to the sink's logger)."""

    def _transactional(self, transactional_id: str, conns: Any) -> Any:
        self._conf["debug"] = "eos"
        return super()._transactional(transactional_id, conns)


def test_back_to_back_fused_transactions_never_wait_for_commit_markers(
    fused: Fused, caplog: pytest.LogCaptureFixture
) -> None:
    """A commit returns before the broker wrote its markers; the same transactional id's next
    transaction then gets CONCURRENT_TRANSACTIONS for its partitions and librdkafka retries after
    20 ms: that wait made fused mode's p99. Fused transactions alternate between two ids, so none
    waits. The lanes never overlap: per partition the records keep their order, and the newest
    position is the one read back."""
    f = fused
    ensure_topics(f.conns, f.pipeline.raw_topic)
    encoder = AvroEncoder(register_raw_schema(f.conns, f.raw))
    routes = FusedRoutes(f.filters, f.conns, f.raw)
    routes.start()
    caplog.set_level(logging.DEBUG, logger="cdcrouter.capture.kafka")
    sink = _EosLogged(f.conns, f.pipeline.raw_topic, f.pipeline.replication.slot, routes)
    txns, per_txn = 40, 20
    try:
        for t in range(txns):  # back to back, as fused capture commits at 2,000 changes/s
            sink.begin()
            for i in range(t * per_txn, (t + 1) * per_txn):
                event = make_event(i)
                sink.produce_event(event_key(event), encoder.encode(event))
            sink.commit(Offsets(commit_lsn=t + 1, end_lsn=t + 1, events_total=(t + 1) * per_txn))
    finally:
        sink.close()
        routes.close()
    waited = [r.getMessage() for r in caplog.records if "concurrent op" in r.getMessage().lower()]
    # one lane: 7-10 of 40 at load 18-22; three: none in 5 runs (one allowed: a box under heavy load)
    assert len(waited) <= 1, f"{len(waited)} AddPartitionsToTxn answered CONCURRENT_TRANSACTIONS: {waited}"
    assert any(r.getMessage().startswith("ADDPARTS") for r in caplog.records), "no eos debug log seen"
    position = read_offsets(f.conns, f.pipeline.raw_topic.offsets_topic, f.pipeline.replication.slot)
    assert position is not None and position.commit_lsn == txns  # the last commit, whichever lane
    order = {make_event(i)["eventHeader"]["uuid"]: i for i in range(txns * per_txn)}
    decoder = RegistryDecoder(f.conns.registry.url)
    last: dict[int, int] = {}
    msgs = read_topic(f.conns.kafka.to_librdkafka(), f.raw)
    assert len(msgs) == txns * per_txn
    for m in msgs:
        i = order[decoder.decode(m.value())["eventHeader"]["uuid"]]
        assert i > last.get(m.partition(), -1), f"partition {m.partition()}: event {i} after a later one"
        last[m.partition()] = i


def test_a_plain_capture_fences_every_fused_lane(fused: Fused) -> None:
    """A fused capture killed with a transaction open on a lane other than the first (its position
    record included): a plain capture started next fences every lane id. Otherwise that open record
    holds the offsets topic's last stable offset back for the transaction timeout (60 s), and a
    read_committed reader of the position stops before it: a restart then would resume from an
    older position than the plain capture committed, and send its changes again."""
    f = fused
    ensure_topics(f.conns, f.pipeline.raw_topic)
    routes = FusedRoutes(f.filters, f.conns, f.raw)
    routes.start()
    slot, offsets_topic = f.pipeline.replication.slot, f.pipeline.raw_topic.offsets_topic
    zombie = FusedSink(f.conns, f.pipeline.raw_topic, slot, routes)
    try:
        zombie.begin()
        zombie.commit(Offsets(commit_lsn=1, end_lsn=1))
        zombie.begin()  # the next lane
        assert zombie.producer is not zombie.lanes[0]
        zombie.producer.produce(offsets_topic, Offsets(commit_lsn=2, end_lsn=2).to_json(), slot.encode())
        assert zombie.producer.flush(10) == 0  # written, never committed: the process "dies" here
        plain = TransactionalSink(f.conns, f.pipeline.raw_topic, slot)  # a plain capture's start
        try:
            plain.begin()
            plain.commit(Offsets(commit_lsn=3, end_lsn=3))
        finally:
            plain.close()
        position = read_offsets(f.conns, offsets_topic, slot, timeout_s=20)
        assert position is not None and position.commit_lsn == 3, position
    finally:
        routes.close()
