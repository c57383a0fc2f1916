"""kill -9 the capture in the middle of a chunked snapshot, restart it: the chunks committed
before the kill are readable (read_committed) while the snapshot is unfinished, `capture status`
shows its progress, and the restart resumes at the next chunk: every row exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from capture_helpers import CaptureRun, drop_capture_objects, make_pipeline, read_topic
from confluent_kafka import Consumer, TopicPartition
from ruamel.yaml import YAML

from cdcrouter.capture import CaptureEngine, apply_domain
from cdcrouter.capture.sink import Offsets, TransactionalSink, ensure_topics, read_offsets
from cdcrouter.capture.status import capture_status

pytestmark = pytest.mark.integration

# 60 chunks: the kill lands after 20, so 40 are left for the restart to resume (rows are not the point)
ROWS, CHUNK = 6_000, 100


def _capture(path: Path, state_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CDCROUTER_STATE_DIR": str(state_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "cdcrouter.cli.main", "capture", "run", "--pipeline", str(path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


def _wait_for_chunks(run: CaptureRun, proc: subprocess.Popen[bytes], log: Path, rows: int) -> None:
    """Follow the position records as they commit (read_committed) until ``rows`` are done."""
    consumer = Consumer(
        {
            **run.conns.kafka.to_librdkafka(),
            "group.id": f"{run.topic}-follow",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([TopicPartition(run.pipeline.raw_topic.offsets_topic, 0, 0)])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"capture exited early: {log.read_text()[-2000:]}"
            for msg in consumer.consume(1000, 0.05):
                if msg.error() or msg.value() is None:
                    continue
                pos = Offsets.from_json(msg.value())
                if pos.snapshot and pos.snapshot[0]["rows"] >= rows:
                    return
        raise AssertionError(f"the snapshot never reached {rows} rows: {log.read_text()[-2000:]}")
    finally:
        consumer.close()


def test_kill_9_mid_snapshot_resumes_at_next_chunk(capture_run: CaptureRun, tmp_path: Path) -> None:
    run = capture_run
    run.pipeline = make_pipeline(
        run.schema,
        run.topic.removeprefix("raw-"),
        raw_topic={"name": run.topic, "partitions": 3},
        replication={"snapshot_chunk_size": CHUNK},
        outbox=None,
    )
    run.pipeline = run.pipeline.model_copy(
        update={"tables": {"car_entities": run.pipeline.tables["car_entities"]}}
    )
    run.sql(
        "INSERT INTO car_entities (id, vin, make, model, model_year) "
        f"SELECT 'C' || lpad(g::text, 6, '0'), 'V', 'M', 'X', g FROM generate_series(1, {ROWS}) g",
        "ANALYZE car_entities",
    )
    pfile, log = tmp_path / "pipeline.yaml", tmp_path / "capture.log"
    doc = run.pipeline.model_dump(by_alias=True, exclude={"source_file", "connections"}, exclude_none=True)
    YAML().dump(doc, pfile)
    offsets_topic, slot = run.pipeline.raw_topic.offsets_topic, run.pipeline.replication.slot

    ensure_topics(run.conns, run.pipeline.raw_topic)
    first = _capture(pfile, run.state_dir, log)
    try:
        _wait_for_chunks(run, first, log, CHUNK * 20)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()

    # `capture status` answers while the dead capture's open transaction still holds readers back
    status = capture_status(run.pipeline, run.conns)["snapshot"]
    TransactionalSink(run.conns, run.pipeline.raw_topic, slot).close()  # fence it, as a restart does
    before = read_offsets(run.conns, offsets_topic, slot)
    assert before is not None and before.snapshot, f"the kill did not land mid-snapshot ({before}); see {log}"
    done_before = before.snapshot[0]["rows"]
    assert 0 < done_before < ROWS
    assert len(read_topic(run.conns, run.topic, timeout_s=60)) == done_before, (
        "the committed chunks are not exactly what the position record says"
    )
    assert status["table"] == "car_entities" and status["rows"] == done_before
    assert status["estimated_rows"] == pytest.approx(ROWS, rel=0.2) and status["rows_per_s"] > 0

    second = _capture(pfile, run.state_dir, log)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            pos = read_offsets(run.conns, offsets_topic, slot)
            if pos is not None and pos.snapshot_done:
                break
            assert second.poll() is None, f"capture died: {log.read_text()[-2000:]}"
            time.sleep(0.5)
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0, log.read_text()[-2000:]
    finally:
        if second.poll() is None:
            second.kill()

    text = log.read_text()
    assert "snapshot pending for car_entities" in text, text[-2000:]
    records = read_topic(run.conns, run.topic, expect=ROWS, timeout_s=120)
    per_key = Counter(key for key, event in records if event["sourceMetadata"]["operation"] == "SNAPSHOT")
    resent = sum(per_key.values()) - len(per_key)
    assert resent == 0, f"{resent} rows were sent twice across the kill"
    assert len(per_key) == ROWS == len(records), f"{len(per_key)} distinct rows of {ROWS}"


def test_postgres_restart_mid_snapshot_resumes_exactly_once(
    stack: Any, private_pg: Any, unique_name: Any
) -> None:
    """The chunk reader's own connection dies with PostgreSQL: capture reconnects, resumes from
    the committed chunk, and every row is still sent exactly once."""
    conns = stack.connections.model_copy(update={"postgres": private_pg.connections().postgres})
    name = unique_name("snr")
    schema = name.replace("-", "_")
    apply_domain(conns.postgres.conninfo(), schema)
    pipeline = make_pipeline(
        schema, name, raw_topic={"partitions": 1}, replication={"snapshot_chunk_size": 50}, outbox=None
    )
    pipeline = pipeline.model_copy(update={"tables": {"car_entities": pipeline.tables["car_entities"]}})
    run = CaptureRun(conns, pipeline, schema, stack.state_dir)
    rows = 6000
    run.sql(
        "INSERT INTO car_entities (id, vin, make, model) "
        f"SELECT 'C' || lpad(g::text, 5, '0'), 'V', 'M', 'X' FROM generate_series(1, {rows}) g"
    )
    try:
        engine = CaptureEngine(pipeline, conns, progress=lambda _m: None)
        stop, errors = threading.Event(), []
        thread = threading.Thread(target=lambda: _run(engine, stop, errors), daemon=True)
        thread.start()
        run.engines.append((engine, thread, stop))
        engine.errors = errors  # type: ignore[attr-defined]
        deadline = time.monotonic() + 60
        while engine.stats.snapshot_events < 500 and time.monotonic() < deadline and not errors:
            time.sleep(0.01)
        assert 0 < engine.stats.snapshot_events < rows and not errors, "the restart did not land mid-snapshot"
        private_pg.down(["postgres"])
        private_pg.up(["postgres"])
        assert engine.ready.wait(120), f"the snapshot did not finish after the restart: {errors}"
        records = read_topic(conns, pipeline.raw_topic.name, expect=rows, timeout_s=60)
        run.stop()
        assert engine.stats.reconnects >= 1, "the restart was not noticed"
        per_key = Counter(k for k, e in records if e["sourceMetadata"]["operation"] == "SNAPSHOT")
        assert len(per_key) == rows and len(records) == rows, f"{len(records)} records, {len(per_key)} rows"
    finally:
        run.engines.clear()
        drop_capture_objects(conns, pipeline, schema)


def _run(engine: CaptureEngine, stop: threading.Event, errors: list[BaseException]) -> None:
    try:
        engine.run(stop)
    except BaseException as exc:
        errors.append(exc)
        engine.ready.set()
