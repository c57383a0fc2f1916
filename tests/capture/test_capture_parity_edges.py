"""Both engines agree at the edges too: JSON keys with dots, timestamps and dates outside years
1-9999 and infinity, generated columns, and a partitioned table with a cross-partition UPDATE."""

from __future__ import annotations

from typing import Any

import pytest
from capture_helpers import CaptureRun
from test_capture_parity import both_engines, records_of_both

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("postgres", "kafka", "registry", "connect")]

DDL = (
    "CREATE TABLE edge_values (id int PRIMARY KEY, doc jsonb, ts timestamptz, tsl timestamp, d date, "
    "n int, twice int GENERATED ALWAYS AS (n * 2) STORED, tms timestamp(3), t6 timestamp(6))",
    "CREATE TABLE orders (id int NOT NULL, k text NOT NULL, amount int, PRIMARY KEY (id, k)) "
    "PARTITION BY LIST (k)",
    "CREATE TABLE orders_eu PARTITION OF orders FOR VALUES IN ('eu')",
    "CREATE TABLE orders_us PARTITION OF orders FOR VALUES IN ('us')",
)


def test_embedded_and_debezium_agree_on_edge_values(capture_run: CaptureRun, stack: Any) -> None:
    run = capture_run
    run.sql(*DDL)
    tables = {"edge_values": {}, "orders": {"entity_id": "id"}}
    with both_engines(run, tables=tables) as (dbz_pipeline, errors):
        run.sql(
            "INSERT INTO edge_values (id, doc, ts, tsl, d, n, tms, t6) VALUES "
            """(1, '{"a.b": 1, "a": {"b": 2}}', '0044-03-15 12:00:00.5+00 BC', '10000-01-01 00:00:00', """
            "'0044-03-15 BC', 1, '2024-06-01 10:00:00.123', '2024-06-01 10:00:00.123456')"
        )
        run.sql(
            "INSERT INTO edge_values (id, ts, tsl, d, n, tms, t6) VALUES "
            "(2, 'infinity', '-infinity', 'infinity', 2, 'infinity', '0044-03-15 12:00:00.5 BC'), "
            "(3, '-infinity', 'infinity', '-infinity', 3, '0044-03-15 12:00:00.5 BC', '-infinity')"
        )
        run.sql("""UPDATE edge_values SET doc = '{"a.b": 1, "a": {"b": 3}}', n = 5 WHERE id = 1""")
        run.sql("INSERT INTO orders VALUES (1, 'eu', 10)")
        run.sql("UPDATE orders SET k = 'us' WHERE id = 1")
        run.sql("DELETE FROM orders WHERE id = 1")
        embedded = records_of_both(run, dbz_pipeline, errors, expected=8)
        by_id = {
            e["eventBody"]["entities"][0]["entityId"]: e["eventBody"]["entities"][0]["updatedAttributes"]
            for e in embedded
            if e["sourceMetadata"]["table"] == "edge_values"
        }
        assert {k: by_id["2"][k] for k in ("ts", "tsl", "d")} == {
            "ts": "infinity",
            "tsl": "-infinity",
            "d": "infinity",
        }
        assert {k: by_id["3"][k] for k in ("ts", "tsl", "d")} == {
            "ts": "-infinity",
            "tsl": "infinity",
            "d": "-infinity",
        }
        first = embedded[0]["eventBody"]["entities"][0]["updatedAttributes"]
        assert first["doc.a\\.b"] == "1" and first["doc.a.b"] == "2" and "twice" not in first
        assert first["ts"] == "-0043-03-15T12:00:00.5Z" and first["tsl"] == "+10000-01-01T00:00:00Z"
        # timestamp(0-3) arrives from Debezium in milliseconds, timestamp(4-6) in microseconds
        inserted = {
            e["eventBody"]["entities"][0]["entityId"]: e["eventBody"]["entities"][0]["updatedAttributes"]
            for e in embedded
            if e["sourceMetadata"]["table"] == "edge_values" and e["sourceMetadata"]["operation"] == "INSERT"
        }
        assert [inserted[i]["tms"] for i in "123"] == [
            "2024-06-01T10:00:00.123Z",
            "infinity",
            "-0043-03-15T12:00:00.5Z",
        ]
        assert [inserted[i]["t6"] for i in "123"] == [
            "2024-06-01T10:00:00.123456Z",
            "-0043-03-15T12:00:00.5Z",
            "-infinity",
        ]
