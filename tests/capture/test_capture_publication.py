"""Publication features pushed into PostgreSQL (row filter, column list) and the idle-slot heartbeat."""

from __future__ import annotations

import time

import psycopg
import pytest
from capture_helpers import CaptureRun, make_pipeline

from cdcrouter.capture.pgoutput import str_to_lsn

pytestmark = [pytest.mark.integration, pytest.mark.pg_versions()]  # on 15 and 18


def test_row_filter_and_excluded_columns_are_pushed_down(capture_run: CaptureRun) -> None:
    run = capture_run
    run.pipeline = make_pipeline(
        run.schema,
        run.topic.removeprefix("raw-"),
        tables={
            "car_entities": {
                "entity_type": "Car",
                "row_filter": "active",
                "exclude_columns": ["notes", "vin"],
            }
        },
        outbox=None,
    )
    run.sql("INSERT INTO car_entities (id, vin, make, model, notes) VALUES ('C0', 'V', 'M', 'X', 'old')")
    run.sql("INSERT INTO car_entities (id, vin, make, model, active) VALUES ('Cx', 'V', 'M', 'X', false)")
    run.start()
    run.sql("INSERT INTO car_entities (id, vin, make, model, notes) VALUES ('C1', 'V', 'M', 'X', 'secret')")
    run.sql("INSERT INTO car_entities (id, vin, make, model, active) VALUES ('C2', 'V', 'M', 'X', false)")
    run.sql("UPDATE car_entities SET model = 'Y' WHERE id = 'C1'")
    events = run.events(expect=3)
    assert [
        (e["sourceMetadata"]["operation"], e["eventBody"]["entities"][0]["entityId"]) for e in events
    ] == [
        ("SNAPSHOT", "C0"),
        ("INSERT", "C1"),
        ("UPDATE", "C1"),
    ]
    for e in events:
        attrs = e["eventBody"]["entities"][0]["updatedAttributes"]
        assert "notes" not in attrs and "vin" not in attrs
    assert events[2]["eventBody"]["entities"][0]["updatedAttributes"] == {"id": "C1", "model": "Y"}


def test_idle_slot_is_acknowledged_so_it_does_not_pin_wal(capture_run: CaptureRun) -> None:
    run = capture_run
    run.pipeline = make_pipeline(run.schema, run.topic.removeprefix("raw-"), heartbeat_interval_s=0.5)
    run.start()
    slot = run.pipeline.replication.slot
    with psycopg.connect(run.conns.postgres.conninfo(), autocommit=True) as conn:
        start = conn.execute(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        )
        before = str_to_lsn(start.fetchone()[0])  # type: ignore[index]
        # WAL from a table capture does not publish
        conn.execute(f'CREATE TABLE "{run.schema}".noise (x int)')
        conn.execute(f'INSERT INTO "{run.schema}".noise SELECT generate_series(1, 20000)')
        target = str_to_lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])  # type: ignore[index]
        deadline = time.monotonic() + 30
        now = before
        while time.monotonic() < deadline:
            conn.execute(
                "SELECT pg_logical_emit_message(false, 'cdcrouter-test', 'tick')"
            )  # keepalive traffic
            row = conn.execute(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
            now = str_to_lsn(row[0])  # type: ignore[index]
            if now >= target:
                break
            time.sleep(0.3)
    assert now >= target > before, "the idle slot was not acknowledged past unrelated WAL"
