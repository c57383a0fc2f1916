"""A PostgreSQL transaction too long for one Kafka transaction is committed in parts, exactly
once across a restart in its middle. One Kafka transaction per PostgreSQL transaction made a
4,000,000-row INSERT (about 90 s of capture under load) outlive the producer's 60 s
transaction.timeout.ms: the broker aborted it, and every retry did the same, for ever."""

from __future__ import annotations

import itertools
import time
import uuid

import pytest
from capture_helpers import CaptureRun, make_pipeline
from confluent_kafka import Consumer, TopicPartition

pytestmark = [pytest.mark.integration]

ROWS = 120_000


def _keys(run: CaptureRun, until: bytes, timeout_s: float) -> list[tuple[bytes, int]]:
    """Keys (entity ids) and offsets of the raw topic as a read_committed consumer sees them, up to
    ``until``."""
    consumer = Consumer(
        {
            **run.conns.kafka.to_librdkafka(),
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(run.topic, 0, 0)])
    keys: list[tuple[bytes, int]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and until not in [k for k, _ in keys[-1:]]:
            keys.extend((m.key(), m.offset()) for m in consumer.consume(10_000, 0.2) if not m.error())
    finally:
        consumer.close()
    return keys


def _first_visible(run: CaptureRun, timeout_s: float) -> int:
    """How many records are readable (read_committed) once the first ones are."""
    consumer = Consumer(
        {
            **run.conns.kafka.to_librdkafka(),
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(run.topic, 0, 0)])
    deadline = time.monotonic() + timeout_s
    seen = 0
    try:
        while time.monotonic() < deadline:
            got = sum(1 for m in consumer.consume(10_000, 0.05) if not m.error())
            if seen and not got:
                return seen
            seen += got
    finally:
        consumer.close()
    return seen


def test_a_transaction_longer_than_max_open_s_commits_in_parts_exactly_once(capture_run: CaptureRun) -> None:
    run = capture_run
    run.sql("CREATE TABLE bulk (id int PRIMARY KEY, note text)")
    run.pipeline = make_pipeline(
        run.schema, run.topic.removeprefix("raw-"), tables={"bulk": {}}, batching={"max_open_s": 0.2}
    )
    run.start()
    run.sql(f"INSERT INTO bulk SELECT g, 'row ' || g FROM generate_series(1, {ROWS}) g")
    visible = _first_visible(run, 60)
    assert visible > 0, "nothing of the transaction became readable"
    run.stop()  # most likely in the middle of the transaction: the rest comes after the restart
    stopped_at = _first_visible(run, 5)
    run.start()
    run.sql(f"INSERT INTO bulk VALUES ({ROWS + 1}, 'after')")
    read = _keys(run, str(ROWS + 1).encode(), 120)
    keys = [k for k, _ in read]
    # every row once, in commit order (one partition), whatever the split points and the restart
    assert keys == [str(i).encode() for i in range(1, ROWS + 2)], (len(keys), visible, stopped_at)
    # a commit inside the transaction's rows leaves its marker's offset between two of them (a
    # fast capture commits the parts back to back, so how many became readable at once says nothing)
    offsets = [o for _, o in read[:ROWS]]
    commits_inside = sum(1 for a, b in itertools.pairwise(offsets) if b - a > 1)
    assert commits_inside >= 1, f"the transaction was committed as a whole ({visible} records at once)"
