"""Capture never changes what the application can do: a table (or partition) that PostgreSQL
would refuse to UPDATE once published is refused BEFORE the publication is touched."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from capture_helpers import CaptureRun, make_pipeline

from cdcrouter.errors import CaptureError

pytestmark = [pytest.mark.integration, pytest.mark.pg_versions()]  # on 15 and 18


def _use(run: CaptureRun, tables: dict[str, Any], **over: Any) -> None:
    run.pipeline = make_pipeline(run.schema, run.topic.removeprefix("raw-"), tables=tables, **over)


def _refused(run: CaptureRun) -> str:
    """Start capture, expect the refusal; returns its message and hint."""
    with pytest.raises(CaptureError) as info:
        run.start()
    run.engines.clear()  # the engine thread ended with the error this test expects
    return f"{info.value.message} {info.value.hint}"


def _published(run: CaptureRun) -> set[str]:
    with psycopg.connect(run.conns.postgres.conninfo()) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = %s",
            (run.pipeline.replication.publication,),
        ).fetchall()
    return {r[0] for r in rows}


def test_a_table_without_identity_is_refused_and_the_application_can_still_update_it(
    capture_run: CaptureRun,
) -> None:
    run = capture_run
    run.sql("CREATE TABLE ledger (ref text NOT NULL, amount numeric)", "INSERT INTO ledger VALUES ('r1', 1)")
    _use(run, {"ledger": {"entity_id": "ref"}}, replication={"replica_identity": "default"})
    message = _refused(run)
    assert f"table {run.schema}.ledger has no primary key" in message
    assert f"ALTER TABLE {run.schema}.ledger REPLICA IDENTITY FULL" in message
    assert "ledger" not in _published(run)
    # the application's own writes still work (they failed once the table was published)
    run.sql("UPDATE ledger SET amount = 2 WHERE ref = 'r1'", "DELETE FROM ledger WHERE ref = 'r1'")


def test_a_column_list_without_the_identity_columns_is_refused(capture_run: CaptureRun) -> None:
    run = capture_run
    run.sql("CREATE TABLE plates (id int PRIMARY KEY, plate text NOT NULL, note text)")
    run.sql("INSERT INTO plates VALUES (1, 'AB-1', 'x')")
    tables = {"plates": {"entity_id": "plate", "exclude_columns": ["id"]}}
    _use(run, tables, replication={"replica_identity": "default"})
    assert "exclude_columns leaves out id" in _refused(run)
    assert "plates" not in _published(run)
    run.sql("UPDATE plates SET note = 'y' WHERE id = 1")


def test_a_column_list_on_a_full_identity_table_is_refused(capture_run: CaptureRun) -> None:
    run = capture_run
    run.sql(
        "CREATE TABLE plates (id int PRIMARY KEY, plate text NOT NULL, note text)",
        "ALTER TABLE plates REPLICA IDENTITY FULL",
        "INSERT INTO plates VALUES (1, 'AB-1', 'x')",
    )
    _use(run, {"plates": {"exclude_columns": ["note"]}}, replication={"replica_identity": "default"})
    message = _refused(run)
    assert "exclude_columns needs a publication column list" in message
    assert f"ALTER TABLE {run.schema}.plates REPLICA IDENTITY DEFAULT" in message
    assert "plates" not in _published(run)
    run.sql("UPDATE plates SET note = 'y' WHERE id = 1")


def test_with_replica_identity_full_the_table_is_captured_and_stays_writable(capture_run: CaptureRun) -> None:
    run = capture_run
    run.sql("CREATE TABLE ledger (ref text NOT NULL, amount numeric)")
    _use(run, {"ledger": {"entity_id": "ref"}})
    run.start()
    run.sql("INSERT INTO ledger VALUES ('r1', 1)", "UPDATE ledger SET amount = 2 WHERE ref = 'r1'")
    events = run.events(expect=2)
    assert [e["eventBody"]["entities"][0]["updatedAttributes"] for e in events] == [
        {"ref": "r1", "amount": "1"},
        {"ref": "r1", "amount": "2"},
    ]


def test_a_partition_without_identity_is_refused_by_name(capture_run: CaptureRun) -> None:
    run = capture_run
    run.sql(
        "CREATE TABLE readings (site text NOT NULL, at int NOT NULL, v int) PARTITION BY LIST (site)",
        "CREATE TABLE readings_a PARTITION OF readings (PRIMARY KEY (site, at)) FOR VALUES IN ('a')",
        "CREATE TABLE readings_b PARTITION OF readings FOR VALUES IN ('b')",
        "INSERT INTO readings VALUES ('a', 1, 1), ('b', 1, 1)",
    )
    _use(run, {"readings": {"entity_id": ["site", "at"]}}, replication={"replica_identity": "default"})
    message = _refused(run)
    assert f"partition {run.schema}.readings_b of readings has no primary key" in message
    assert "readings_a" not in message
    assert f"ALTER TABLE {run.schema}.readings_b REPLICA IDENTITY FULL" in message
    assert "readings" not in _published(run)
    run.sql("UPDATE readings SET v = 2", "DELETE FROM readings")


def test_a_partition_attached_while_capture_runs_is_made_full_or_reported(capture_run: CaptureRun) -> None:
    run = capture_run
    run.sql(
        "CREATE TABLE readings (site text NOT NULL, at int NOT NULL, v int) PARTITION BY LIST (site)",
        "CREATE TABLE readings_a PARTITION OF readings FOR VALUES IN ('a')",
    )
    _use(run, {"readings": {"entity_id": ["site", "at"]}})
    lines: list[str] = []
    from cdcrouter.capture import CaptureEngine

    engine = run.start()
    assert isinstance(engine, CaptureEngine)
    engine.progress = lines.append
    run.sql(
        "CREATE TABLE readings_b (site text NOT NULL, at int NOT NULL, v int)",
        "ALTER TABLE readings ATTACH PARTITION readings_b FOR VALUES IN ('b')",
    )
    run.sql("INSERT INTO readings VALUES ('b', 1, 1)")  # the root's Relation message comes again
    run.events(expect=1)
    assert any(f"set REPLICA IDENTITY FULL on partition {run.schema}.readings_b" in line for line in lines)
    run.sql("UPDATE readings SET v = 2 WHERE site = 'b'")  # would fail without an identity
    events = run.events(expect=2)
    assert events[1]["eventBody"]["entities"][0]["updatedAttributes"] == {"site": "b", "at": "1", "v": "2"}


def test_with_default_identity_a_partition_attached_without_one_is_reported_with_the_fix(
    capture_run: CaptureRun,
) -> None:
    run = capture_run
    run.sql(
        "CREATE TABLE readings (site text NOT NULL, at int NOT NULL, v int) PARTITION BY LIST (site)",
        "CREATE TABLE readings_a PARTITION OF readings FOR VALUES IN ('a')",
        "ALTER TABLE readings_a REPLICA IDENTITY FULL",
    )
    _use(run, {"readings": {"entity_id": ["site", "at"]}}, replication={"replica_identity": "default"})
    engine = run.start()
    lines: list[str] = []
    engine.progress = lines.append
    run.sql(
        "CREATE TABLE readings_b (site text NOT NULL, at int NOT NULL, v int)",
        "ALTER TABLE readings ATTACH PARTITION readings_b FOR VALUES IN ('b')",
    )
    run.sql("INSERT INTO readings VALUES ('b', 1, 1)")
    run.events(expect=1)
    reports = [line for line in lines if f"{run.schema}.readings_b" in line]
    assert len(reports) == 1, lines
    assert "has no primary key" in reports[0]
    assert f"ALTER TABLE {run.schema}.readings_b REPLICA IDENTITY FULL" in reports[0]


@pytest.mark.pg_versions("15")  # the CLI reads its connections from the shared stack's state dir
def test_the_cli_reports_the_refusal_with_its_fix_and_exit_1(
    capture_run: CaptureRun,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cdcrouter.cli.main import main

    run = capture_run
    run.sql("CREATE TABLE ledger (ref text NOT NULL, amount numeric)")
    p = run.pipeline
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        f"schema: {run.schema}\n"
        f"raw_topic: {{name: {p.raw_topic.name}, partitions: 1}}\n"
        f"replication: {{slot: {p.replication.slot}, publication: {p.replication.publication}, "
        "replica_identity: default}\n"
        "tables:\n  ledger: {entity_id: ref}\n"
    )
    monkeypatch.setenv("CDCROUTER_STATE_DIR", str(run.state_dir))
    assert main(["capture", "run", "--pipeline", str(pipeline), "--duration", "3"]) == 1
    err = capsys.readouterr().err
    assert f"table {run.schema}.ledger has no primary key" in err
    assert f"ALTER TABLE {run.schema}.ledger REPLICA IDENTITY FULL" in err
    assert "Traceback" not in err
    run.sql("UPDATE ledger SET amount = 1")


def test_an_entity_id_outside_the_replica_identity_is_refused(capture_run: CaptureRun) -> None:
    """With REPLICA IDENTITY DEFAULT a DELETE carries only the primary key: an entity_id outside it
    would give DELETE events an empty entity id, so capture refuses it before publishing."""
    run = capture_run
    run.sql(
        "CREATE TABLE badges (id int PRIMARY KEY, code text NOT NULL)", "INSERT INTO badges VALUES (1, 'b1')"
    )
    _use(run, {"badges": {"entity_id": "code"}}, replication={"replica_identity": "default"})
    message = _refused(run)
    assert "tables.badges.entity_id uses code" in message
    assert "DELETE events would have no entity id" in message
    assert "replication.replica_identity: full" in message
    assert "badges" not in _published(run)
    run.sql("DELETE FROM badges WHERE id = 1")  # the application's writes are untouched
