"""``capture run`` stops promptly on SIGTERM, also in the middle of a large PostgreSQL transaction
whose changes are in an open Kafka transaction: that transaction is aborted (the changes come
again from the slot on the next start), not waited out."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest
from capture_helpers import CaptureRun, make_pipeline
from test_capture_crash import _capture, _wait_active, _write_pipeline

pytestmark = pytest.mark.integration

ROWS = 300_000  # one transaction: several seconds of streaming on a loaded 2-core box
STOP_WITHIN_S = 15.0  # generous for load; a stop waiting on a 60 s timeout fails it


def test_sigterm_mid_transaction_stops_promptly(capture_run: CaptureRun, tmp_path: Path) -> None:
    run = capture_run
    run.sql("CREATE TABLE big (id int PRIMARY KEY, v text)")
    run.pipeline = make_pipeline(run.schema, run.topic.removeprefix("raw-"), tables={"big": {}}, outbox=None)
    pfile, log = tmp_path / "pipeline.yaml", tmp_path / "capture.log"
    _write_pipeline(run, pfile)
    proc = _capture(run, pfile, log)
    try:
        _wait_active(run, proc)
        writer = threading.Thread(
            target=run.sql,
            args=(f"INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, {ROWS}) g",),
        )
        writer.start()
        writer.join()
        time.sleep(1.0)  # capture is streaming the transaction now
        assert proc.poll() is None, log.read_text()[-2000:]
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=90)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, log.read_text()[-2000:]
    assert took < STOP_WITHIN_S, f"capture took {took:.1f} s to stop: {log.read_text()[-2000:]}"
    with psycopg.connect(run.conns.postgres.conninfo()) as conn:
        row = conn.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (run.pipeline.replication.slot,)
        ).fetchone()
    assert row is not None and not row[0]  # the slot is released for the next start
