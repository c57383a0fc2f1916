"""Generated columns: PostgreSQL's logical replication never sends them, so snapshot rows leave
them out too (one shape for a table's events), and start-up says so."""

from __future__ import annotations

import logging

import pytest
from capture_helpers import CaptureRun, make_pipeline

from cdcrouter.errors import CaptureError

pytestmark = [pytest.mark.integration, pytest.mark.pg_versions()]  # on 15 and 18

DDL = (
    "CREATE TABLE invoices (id int PRIMARY KEY, net numeric(10, 2), "
    "gross numeric(10, 2) GENERATED ALWAYS AS (net * 1.2) STORED, note text)"
)


def test_snapshot_and_stream_give_the_same_columns_and_start_up_warns(
    capture_run: CaptureRun, caplog: pytest.LogCaptureFixture
) -> None:
    run = capture_run
    run.sql(DDL, "INSERT INTO invoices (id, net, note) VALUES (1, 10.00, 'a')")
    run.pipeline = make_pipeline(run.schema, run.topic.removeprefix("raw-"), tables={"invoices": {}})
    with caplog.at_level(logging.WARNING, logger="cdcrouter.capture"):
        run.start()
    run.sql("INSERT INTO invoices (id, net, note) VALUES (2, 20.00, 'b')")
    run.sql("UPDATE invoices SET net = 30.00 WHERE id = 2")
    events = run.events(expect=3)
    attrs = [e["eventBody"]["entities"][0]["updatedAttributes"] for e in events]
    assert attrs == [
        {"id": "1", "net": "10.00", "note": "a"},  # the snapshot row: no gross either
        {"id": "2", "net": "20.00", "note": "b"},
        {"id": "2", "net": "30.00"},
    ]
    warnings = [r.getMessage() for r in caplog.records if "generated columns" in r.getMessage()]
    assert len(warnings) == 1 and "invoices" in warnings[0] and "gross" in warnings[0]


def test_a_generated_entity_id_is_refused(capture_run: CaptureRun) -> None:
    run = capture_run
    run.sql(DDL)
    tables = {"invoices": {"entity_id": "gross"}}
    run.pipeline = make_pipeline(run.schema, run.topic.removeprefix("raw-"), tables=tables)
    with pytest.raises(CaptureError, match="generated column"):
        run.start()
    run.engines.clear()  # the engine thread ended with the error this test expects


@pytest.mark.pg_versions("18")
def test_a_virtual_generated_column_is_never_put_under_full_identity(capture_run: CaptureRun) -> None:
    """PostgreSQL 18 refuses UPDATEs of a published table whose FULL identity holds a VIRTUAL
    generated column (no publication can send one): capture refuses instead, and captures the
    table with the primary key as identity."""
    run = capture_run
    run.sql(
        "CREATE TABLE parcels (id int PRIMARY KEY, kg int, "
        "grams int GENERATED ALWAYS AS (kg * 1000) VIRTUAL)",
        "INSERT INTO parcels (id, kg) VALUES (1, 2)",
    )
    run.pipeline = make_pipeline(run.schema, run.topic.removeprefix("raw-"), tables={"parcels": {}})
    with pytest.raises(CaptureError) as info:
        run.start()
    run.engines.clear()  # the engine thread ended with the error this test expects
    assert f"table {run.schema}.parcels has VIRTUAL generated columns (grams)" in info.value.message
    assert "replica_identity: default" in (info.value.hint or "")
    run.sql("UPDATE parcels SET kg = 3 WHERE id = 1")  # the application's writes still work

    run.pipeline = make_pipeline(
        run.schema,
        run.topic.removeprefix("raw-"),
        tables={"parcels": {}},
        replication={"replica_identity": "default"},
    )
    run.start()
    run.sql("UPDATE parcels SET kg = 4 WHERE id = 1")
    attrs = [e["eventBody"]["entities"][0]["updatedAttributes"] for e in run.events(expect=2)]
    assert attrs == [{"id": "1", "kg": "3"}, {"id": "1", "kg": "4"}]
