"""``dlq list|replay`` on a dead-letter topic whose offsets are not contiguous records.

A transactional writer leaves commit/abort markers and aborted records in the offsets; a reader
that waits for "the record at the end offset - 1", or counts ``high - low``, hangs or overcounts.
The oracle is a read_uncommitted look at the raw offsets, not the code under test.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from cdcrouter.cli.main import main
from cdcrouter.consumer import ConsumerApp
from cdcrouter.consumer._kafka import producer_conf
from cdcrouter.consumer._replay import list_dlqs, read_dlq, replay

from .conftest import event

pytestmark = pytest.mark.integration


def _append_transaction(conns, topic: str, n: int, *, commit: bool) -> None:
    """``n`` junk records in one transaction, committed or aborted (a marker follows either way)."""
    p = Producer(producer_conf(conns, **{"transactional.id": f"t-dlq-junk-{uuid.uuid4().hex[:8]}"}))
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(n):
        p.produce(topic, key=b"junk", value=f"junk-{i}".encode())
    p.flush(30)
    if commit:
        p.commit_transaction(30)
    else:
        p.abort_transaction(30)


@contextmanager
def _open_transaction(conns, topic: str) -> Iterator[None]:
    """A record in a transaction left open while the body runs: the LSO stays below it."""
    p = Producer(producer_conf(conns, **{"transactional.id": f"t-dlq-open-{uuid.uuid4().hex[:8]}"}))
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, key=b"open", value=b"not yet committed")
    p.flush(30)
    try:
        yield
    finally:
        p.abort_transaction(30)


def _raw_offsets(conns, topic: str) -> tuple[int, int]:
    """(high watermark, records a read_uncommitted reader sees): markers are the difference."""
    c = Consumer({**conns.kafka.to_librdkafka(), "group.id": "unused", "isolation.level": "read_uncommitted"})
    try:
        _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        c.assign([TopicPartition(topic, 0, 0)])
        seen = 0
        while seen < high:
            msgs = c.consume(500, 1.0)
            seen += sum(1 for m in msgs if not m.error())
            if not msgs and c.position([TopicPartition(topic, 0)])[0].offset >= high:
                break
        return high, seen
    finally:
        c.close()


def _stable_end(conns, topic: str, isolation: str = "read_committed") -> int:
    """The LSO (read_committed) or the high watermark (read_uncommitted) of partition 0."""
    c = Consumer({**conns.kafka.to_librdkafka(), "group.id": "unused", "isolation.level": isolation})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        c.close()


def _settled(conns, topic: str, within: float = 15.0) -> bool:
    """Whether every transaction on ``topic`` ends within ``within`` s (LSO reaches the high
    watermark). A commit or abort returns before the broker has written its markers."""
    deadline = time.monotonic() + within
    while _stable_end(conns, topic) != _stable_end(conns, topic, "read_uncommitted"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_consumer_dlq_with_an_aborted_tail_and_an_open_transaction(conns, topic, produce, capsys) -> None:
    src = topic(partitions=1)
    uuids = produce(src, [event("LoanCreated", f"L-{i}") for i in range(3)])
    app = ConsumerApp("txn-dlq", conns, group=f"{src}-g", retries=0)

    @app.on(src)
    def fail(ev):
        raise RuntimeError(f"cannot book {ev.entity.entity_id}")

    assert app.run(timeout=30, max_messages=3).dead_lettered == 3
    dlq = app.dlq_topic(src)
    # DLQ offsets: 0-2 dead letters (idempotent producer), 3-4 committed junk + marker 5,
    # 6-7 aborted + marker 8: the tail is an aborted transaction.
    _append_transaction(conns, dlq, 2, commit=True)
    _append_transaction(conns, dlq, 2, commit=False)
    assert _settled(conns, dlq)
    high, visible = _raw_offsets(conns, dlq)
    assert (high, visible) == (9, 7)  # the oracle: 9 offsets, 7 records, 5 committed

    with _open_transaction(conns, dlq):  # offset 9, open: the reader must stop at the LSO (9)
        recs = read_dlq(conns, dlq)
        assert [(r.offset, r.key) for r in recs] == [
            (0, b"L-0"),
            (1, b"L-1"),
            (2, b"L-2"),
            (3, b"junk"),
            (4, b"junk"),
        ]
        assert [r.failure.get("event_uuid") for r in recs[:3]] == uuids
        assert {d.topic: d.records for d in list_dlqs(conns)}[dlq] == 5

        assert main(["dlq", "list", dlq, "--format", "json"]) == 0
        lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert [(x["topic"], x["partition"], x["offset"]) for x in lines] == [(dlq, 0, i) for i in range(5)]
        # The source record's place under its own names (it was at offsets 0-2 of partition 0).
        assert [(x["source_topic"], x["source_partition"], x["source_offset"]) for x in lines[:3]] == [
            (src, 0, i) for i in range(3)
        ]
        assert lines[0]["error"] == "RuntimeError: cannot book L-0"

    # Replay only the dead letters (0-2) back to the source, then again: nothing more, 3 skipped.
    first = replay(conns, dlq, to_offset=2)
    assert (first.replayed, first.skipped, first.targets) == (3, 0, {src: 3})
    again = replay(conns, dlq, to_offset=2)
    assert (again.replayed, again.skipped) == (0, 3)
    # --force from the start: 0-2 go into the open transaction, then junk (no origin header) ends
    # the run with a clear error; the transaction is aborted, not left to hold back src's readers.
    assert main(["dlq", "replay", dlq, "--force"]) == 1
    assert "has no origin topic header" in capsys.readouterr().err
    assert _settled(conns, src)  # an open transaction would hold it for transaction.timeout.ms (60 s)
    # The rest through the CLI (the junk records have no origin header: --to-topic).
    assert main(["dlq", "replay", dlq, "--to-topic", src]) == 0
    assert "replayed 2 record(s)" in capsys.readouterr().out
    assert main(["dlq", "replay", dlq, "--to-topic", src]) == 0
    assert "replayed 0 record(s) (-); skipped 5 already replayed" in capsys.readouterr().out
