"""A failover to a standby that lagged behind what capture already sent to Kafka must stop capture.

Without ``synchronized_standby_slots``, capture may commit changes to Kafka that an asynchronous
standby never received. Promoted, that standby writes its new changes at WAL positions capture has
already passed, and capture would skip them as already sent: a silent loss. The test makes the
standby lag for certain (its primary_conninfo pointed nowhere while the primary commits), kills
the primary, promotes the standby, and expects capture to stop with the fork error instead of
carrying on, and a capture started after the promotion to refuse at start-up (the position
record holds the timeline it was written on). Real processes
throughout: a private primary and standby on PostgreSQL 18, the shared Kafka and registry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from cdcrouter.capture import CaptureEngine, pipeline_from_dict
from cdcrouter.capture.sink import Offsets, read_offsets
from cdcrouter.dr.standby import kill_primary, private_primary_and_standby
from cdcrouter.errors import CaptureError

pytestmark = pytest.mark.integration


def _count(conns: Any, topic: str) -> int:
    """Committed records of the one-partition ``topic`` (read_committed: the last stable offset)."""
    consumer = Consumer(
        {**conns.kafka.to_librdkafka(), "group.id": "fork-count", "isolation.level": "read_committed"}
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        n, idle = 0, 0
        while idle < 3:
            msgs = consumer.consume(1000, 0.3)
            idle = 0 if msgs else idle + 1
            n += sum(1 for m in msgs if not m.error())
        return n
    finally:
        consumer.close()


def _streaming(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'postgres-standby'"
        ).fetchone()
    return bool(row and row[0])


def _wait(what: str, check: Callable[[], bool], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_capture_stops_when_the_promoted_standby_lacks_what_kafka_has(
    stack: Any, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("fork").replace("-", "_")
    topic = name.replace("_", "-")
    pipeline = pipeline_from_dict(
        {
            "schema": name,
            "raw_topic": {"name": topic, "partitions": 1},
            "replication": {"slot": name, "publication": name, "failover": True},
            "batching": {"max_ms": 20},
            "tables": {"orders": {"entity_type": "Order"}},
        }
    )
    with private_primary_and_standby("18", print) as standby:
        primary = standby.primary_settings()
        with psycopg.connect(primary.conninfo(), autocommit=True) as conn:
            # the hazard: the primary no longer holds changes back from capture until the standby has them
            conn.execute("ALTER SYSTEM SET synchronized_standby_slots = ''")
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = ''")
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(f"CREATE SCHEMA {name}")
            conn.execute(f"CREATE TABLE {name}.orders (id int PRIMARY KEY)")
        conns = stack.connections.model_copy(update={"postgres": standby.failover_settings()})
        engine = CaptureEngine(pipeline, conns, progress=print)
        stop, errors = threading.Event(), []

        def run() -> None:
            try:
                engine.run(stop)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            _wait("capture to stream", engine.ready.is_set)

            def insert(dsn: str, ids: range) -> None:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    for i in ids:
                        conn.execute(f"INSERT INTO {name}.orders VALUES (%s)", (i,))

            insert(primary.conninfo(), range(1, 11))
            _wait(
                "the standby's synchronised slot",
                lambda: bool((standby.slot_state(name) or {}).get("synced")),
            )
            standby.wait_slot_synced(name)
            _wait("10 events", lambda: _count(conns, topic) >= 10)
            # the standby stops receiving WAL: its primary_conninfo now leads nowhere
            with psycopg.connect(standby.settings().conninfo(), autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=1 connect_timeout=1'")
                conn.execute("SELECT pg_reload_conf()")
            _wait("the standby to disconnect", lambda: not _streaming(primary.conninfo()))
            insert(primary.conninfo(), range(11, 31))
            _wait("30 events: capture sent what the standby never got", lambda: _count(conns, topic) >= 30)
            kill_primary(standby.stack)
            standby.promote()
            insert(standby.settings().conninfo(), range(100, 105))  # new changes on the promoted standby
            thread.join(120)
            assert not thread.is_alive(), "capture went on after a failover that lost what Kafka has"
            assert errors and isinstance(errors[0], CaptureError), errors
            err = errors[0]
            assert "history leaves timeline 1" in err.message and "(now timeline 2)" in err.message, (
                err.message
            )
            assert "--resnapshot" in (err.hint or "") and "synchronized_standby_slots" in (err.hint or "")

            # A capture started only now (a new process, nothing in memory) knows the old timeline
            # from the position record, and refuses at start-up the same way. Before the record
            # held the timeline, it resumed from the promoted server's synchronised slot and
            # skipped the new changes.
            position = read_offsets(conns, pipeline.raw_topic.offsets_topic, name, timeout_s=30)
            assert position is not None and position.timeline == 1, position
            fresh = CaptureEngine(pipeline, conns, progress=print)
            with pytest.raises(CaptureError) as refused:
                fresh.run(duration_s=30)
            assert "history leaves timeline 1" in refused.value.message, refused.value.message
            assert "(now timeline 2)" in refused.value.message
            assert "--resnapshot" in (refused.value.hint or "")
        finally:
            stop.set()
            thread.join(30)
            from cdcrouter.topics import delete_topics

            delete_topics(stack.connections, [topic, f"{topic}.capture-offsets", f"{topic}.capture-dlq"])


def test_position_records_keep_their_timeline_and_old_ones_still_load() -> None:
    new = Offsets(commit_lsn=5, end_lsn=9, snapshot_done=True, tables=("t",), timeline=3)
    assert Offsets.from_json(new.to_json()) == new
    old = b'{"commit_lsn": 5, "end_lsn": 9, "snapshot_done": true, "events_total": 1, "snapshot": []}'
    assert Offsets.from_json(old).timeline is None and Offsets.from_json(old).end_lsn == 9
