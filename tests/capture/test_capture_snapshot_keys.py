"""Chunked snapshots page by key: a table without a primary key is chunked by its entity_id, which
must then be unique and NOT NULL, else a chunk boundary (or the chunk's key map) would drop rows.
Capture refuses such a snapshot with the fix instead of losing rows silently."""

from __future__ import annotations

import time

import pytest
from capture_helpers import CaptureRun, make_pipeline

from cdcrouter.errors import CaptureError

pytestmark = pytest.mark.integration


def _use(run: CaptureRun, table: str) -> None:
    run.pipeline = make_pipeline(
        run.schema,
        run.topic.removeprefix("raw-"),
        tables={table: {"entity_id": "ref"}},
        replication={"snapshot_chunk_size": 3},
    )


def _refusal(run: CaptureRun, timeout_s: float = 60) -> CaptureError:
    """Start capture and return the error its snapshot stops with (before or after streaming)."""
    try:
        run.start()
    except CaptureError as exc:
        run.engines.clear()
        return exc
    engine, thread, _stop = run.engines[0]
    thread.join(timeout_s)
    assert not thread.is_alive(), "capture kept running though its snapshot cannot be chunked"
    run.engines.clear()
    [error] = engine.errors  # type: ignore[attr-defined]
    assert isinstance(error, CaptureError), error
    return error


def test_a_shared_entity_id_without_a_primary_key_is_refused_not_lost(capture_run: CaptureRun) -> None:
    run = capture_run
    run.sql(
        "CREATE TABLE ledger (ref text, amount int)",
        "INSERT INTO ledger SELECT 'r' || (g / 2), g FROM generate_series(1, 10) g",  # r1 twice, ...
    )
    _use(run, "ledger")
    error = _refusal(run)
    text = f"{error.message} {error.hint}"
    assert "snapshot of ledger cannot be chunked: ref is not unique" in text
    assert "add a PRIMARY KEY to ledger" in text


def test_a_null_entity_id_without_a_primary_key_is_refused(capture_run: CaptureRun) -> None:
    run = capture_run
    run.sql("CREATE TABLE ledger (ref text, amount int)", "INSERT INTO ledger VALUES ('a', 1), (NULL, 2)")
    _use(run, "ledger")
    assert "1 rows have a NULL in ref" in _refusal(run).message


def test_a_unique_entity_id_without_a_primary_key_is_snapshotted_in_chunks(capture_run: CaptureRun) -> None:
    run = capture_run
    run.sql(
        "CREATE TABLE ledger (ref text NOT NULL, amount int)",
        "INSERT INTO ledger SELECT 'r' || lpad(g::text, 2, '0'), g FROM generate_series(1, 10) g",
    )
    _use(run, "ledger")
    run.start()
    events = run.events(expect=10)
    assert sorted(e["eventBody"]["entities"][0]["entityId"] for e in events) == [
        f"r{i:02d}" for i in range(1, 11)
    ]
    time.sleep(0.5)
    engine, _thread, _stop = run.engines[0]
    assert not engine.errors  # type: ignore[attr-defined]
