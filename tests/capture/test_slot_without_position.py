"""A replication slot without a capture position in Kafka (capture/slot_position.py).

Capture used to drop and recreate such a slot. Right when capture stopped before its first
position reached Kafka (nothing sent), silent data loss when the raw topic already holds its
records: the DR drill lost 1,679 changes that way (region b had not mirrored the offsets topic yet).
The oracle is PostgreSQL: the ids of the rows written while capture was stopped."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
from capture_helpers import CaptureRun, make_pipeline
from confluent_kafka.admin import AdminClient
from ruamel.yaml import YAML

from cdcrouter.capture import source
from cdcrouter.capture.sink import read_offsets
from cdcrouter.cli.main import main
from cdcrouter.topics import delete_topics

pytestmark = pytest.mark.integration


def _insert(run: CaptureRun, ids: range) -> None:
    for i in ids:  # one transaction each, as an application writes
        run.sql(f"INSERT INTO car_entities (id, vin, make, model) VALUES ('C{i}', 'V{i}', 'M', 'X')")


def _pg_ids(run: CaptureRun) -> set[str]:
    with psycopg.connect(run.conns.postgres.conninfo()) as conn:
        rows = conn.execute(f'SELECT id FROM "{run.schema}".car_entities').fetchall()
    return {r[0] for r in rows}


def _captured_ids(run: CaptureRun, expect: int) -> set[str]:
    entities = [e["eventBody"]["entities"][0] for e in run.events(expect, timeout_s=60)]
    return {x["entityId"] for x in entities if x["entityType"] == "Car"}


def _delete(run: CaptureRun, topics: list[str]) -> None:
    """Delete the topics and wait until the broker no longer lists them (a loaded broker is slow)."""
    admin = AdminClient(run.conns.kafka.to_librdkafka())
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        delete_topics(run.conns, topics)
        if not set(topics) & set(admin.list_topics(timeout=15).topics):
            return
        time.sleep(1)
    raise AssertionError(f"{topics} still listed 90 s after deleting them")


def _slot_exists(run: CaptureRun) -> bool:
    conn = source.connect_sql(run.conns.postgres)
    try:
        return source.slot_exists(conn, run.pipeline.replication.slot)
    finally:
        conn.close()


def test_a_slot_holding_unsent_changes_is_not_dropped(
    capture_run: CaptureRun,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Changes sent, capture stopped, more changes held by the slot, the position gone (the offsets
    topic deleted, as in a region whose mirror has not copied it): capture refuses to drop the slot
    (old code: recreated it and lost the 5 held changes); `--from-slot` then sends every row."""
    run = capture_run
    run.pipeline = make_pipeline(
        run.schema, run.topic.removeprefix("raw-"), replication={"snapshot": "never"}
    )
    run.start()
    _insert(run, range(0, 5))
    assert len(_captured_ids(run, 5)) == 5
    run.stop()
    _insert(run, range(5, 10))  # held by the slot, never sent
    _delete(run, [run.pipeline.raw_topic.offsets_topic])
    assert (
        read_offsets(run.conns, run.pipeline.raw_topic.offsets_topic, run.pipeline.replication.slot) is None
    )

    path = tmp_path / "pipeline.yaml"  # through the CLI: exit 1, the error and both ways on, no traceback
    doc = run.pipeline.model_dump(by_alias=True, exclude={"source_file", "connections"}, exclude_none=True)
    YAML().dump(doc, path)
    monkeypatch.setenv("CDCROUTER_STATE_DIR", str(run.state_dir))
    code = main(["capture", "run", "--pipeline", str(path), "--duration", "5"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "holds no position" in err and "would lose them" in err and "Traceback" not in err, err
    assert "--from-slot" in err and "--resnapshot" in err, err
    assert _slot_exists(run)

    run.start(from_slot=True)
    expected = _pg_ids(run)
    assert len(expected) == 10
    assert _captured_ids(run, 10) == expected  # the held changes arrived: none lost


def test_a_slot_whose_start_never_reached_kafka_is_recreated(capture_run: CaptureRun) -> None:
    """The crash between creating the slot and committing its first position: the raw topic is
    empty, so the slot is recreated and the initial snapshot sends the rows (as before)."""
    run = capture_run
    _insert(run, range(0, 3))
    with psycopg.connect(run.conns.postgres.conninfo(), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (run.pipeline.replication.slot,)
        )
    run.start()  # waits until the snapshot is done: only a recreated slot takes one
    assert _captured_ids(run, 3) == _pg_ids(run)


def test_snapshot_never_resumes_a_slot_without_position_when_nothing_was_sent(
    capture_run: CaptureRun,
) -> None:
    """Raw and offsets topics empty (as after a crash before the first position reached Kafka) with
    `snapshot: never`: no snapshot stands in for the changes the slot holds, so capture resumes from
    the slot (old code: recreated it and lost the 3 rows written since)."""
    run = capture_run
    run.pipeline = make_pipeline(
        run.schema, run.topic.removeprefix("raw-"), replication={"snapshot": "never"}
    )
    run.start()  # the publication and the slot, as capture creates them
    run.stop()
    raw = run.pipeline.raw_topic
    _delete(run, [raw.name, raw.offsets_topic])
    _insert(run, range(0, 3))  # only the slot has them
    run.start()
    assert _captured_ids(run, 3) == _pg_ids(run)
