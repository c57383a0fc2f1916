"""The failover's capture step on the real stack: a position copied into the target region ahead of
the replication slot is lowered to the slot's confirmed LSN (capture then reads again what the mirror
may have missed), and a slot confirmed past the copied position is reported as a GAP, untouched."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest
from confluent_kafka import Producer

from cdcrouter.capture.pipeline import pipeline_from_dict
from cdcrouter.capture.sink import Offsets, read_offsets
from cdcrouter.consumer import _kafka
from cdcrouter.dr.capture_position import rewind_to_slot, slot_confirmed
from cdcrouter.topics import delete_topics


@pytest.fixture
def slot_and_topic(stack, unique_name: Callable[[str], str]) -> Iterator[tuple[object, str]]:
    conns = stack.connections
    name = unique_name("pos")
    slot = name.replace("-", "_")
    pipeline = pipeline_from_dict(
        {"raw_topic": {"name": name}, "replication": {"slot": slot}, "tables": {"t": {}}}, source="<test>"
    )
    with psycopg.connect(conns.postgres.conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    _kafka.ensure_topic(conns, pipeline.raw_topic.offsets_topic)
    try:
        yield pipeline, slot
    finally:
        with psycopg.connect(conns.postgres.conninfo(), autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        raw = pipeline.raw_topic
        delete_topics(conns, [raw.name, raw.offsets_topic, raw.dlq_topic])


def _write(conns, pipeline, offsets: Offsets) -> None:  # type: ignore[no-untyped-def]
    p = Producer(conns.kafka.producer_conf())
    p.produce(
        pipeline.raw_topic.offsets_topic, key=pipeline.replication.slot.encode(), value=offsets.to_json()
    )
    assert p.flush(30) == 0


def test_a_position_ahead_of_the_slot_is_lowered_to_it(stack, slot_and_topic) -> None:
    conns = stack.connections
    pipeline, slot = slot_and_topic
    confirmed = slot_confirmed(conns, slot)
    assert confirmed
    ahead = Offsets(commit_lsn=confirmed + 5000, end_lsn=confirmed + 5100, snapshot_done=True, events_total=7)
    _write(conns, pipeline, ahead)
    rw = rewind_to_slot(pipeline, conns)
    assert rw.rewound_to == confirmed - 1 and "lowered" in rw.describe()
    now = read_offsets(conns, pipeline.raw_topic.offsets_topic, slot)
    assert now is not None
    # every transaction the slot sends again (commit LSN >= confirmed) is read, not skipped
    assert (now.commit_lsn, now.end_lsn) == (confirmed - 1, confirmed)
    assert now.snapshot_done and now.events_total == 7  # the rest of the record is kept


def test_a_slot_confirmed_past_the_position_is_a_gap(stack, slot_and_topic) -> None:
    conns = stack.connections
    pipeline, slot = slot_and_topic
    confirmed = slot_confirmed(conns, slot)
    assert confirmed
    behind = Offsets(commit_lsn=confirmed - 100, end_lsn=confirmed - 50, snapshot_done=True)
    _write(conns, pipeline, behind)
    rw = rewind_to_slot(pipeline, conns)
    assert rw.rewound_to is None and "GAP" in rw.describe()
    now = read_offsets(conns, pipeline.raw_topic.offsets_topic, slot)
    assert now is not None and now.commit_lsn == confirmed - 100  # untouched


def test_no_position_in_the_target_is_written_at_the_slot(stack, slot_and_topic) -> None:
    """The offsets topic not mirrored yet (`position none`): the failover writes a position at the
    slot's confirmed LSN, so capture resumes from the slot instead of finding a slot without a
    position (the drill lost 1,679 changes when capture recreated it). With `snapshot: initial`
    nobody knows whether the snapshot finished: every table is queued again (at least once)."""
    conns = stack.connections
    pipeline, slot = slot_and_topic
    confirmed = slot_confirmed(conns, slot)
    assert confirmed
    assert read_offsets(conns, pipeline.raw_topic.offsets_topic, slot) is None
    rw = rewind_to_slot(pipeline, conns)
    assert rw.mirrored is None and rw.rewound_to == confirmed - 1
    assert "no position in the target" in rw.describe(), rw.describe()
    now = read_offsets(conns, pipeline.raw_topic.offsets_topic, slot)
    assert now is not None and (now.commit_lsn, now.end_lsn) == (confirmed - 1, confirmed)
    assert not now.snapshot_done and [s["table"] for s in now.snapshot] == ["t"]
