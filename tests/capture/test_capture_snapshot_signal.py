"""Re-snapshots on the real stack: `cdcrouter capture snapshot --table T [--where SQL]` on a
running capture (nothing stops, streaming goes on), and a table added to the pipeline is
snapshotted when capture starts with the new file, once."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from capture_helpers import CaptureRun, make_pipeline, read_topic
from ruamel.yaml import YAML

from cdcrouter.capture.pipeline import Pipeline
from cdcrouter.cli.main import main

pytestmark = pytest.mark.integration


def _only(pipeline: Pipeline, *tables: str) -> Pipeline:
    """make_pipeline merges the sample tables: keep these."""
    return pipeline.model_copy(update={"tables": {t: pipeline.tables[t] for t in tables}})


def _snapshots(records: list[tuple[bytes, dict]], table: str) -> Counter[str]:
    return Counter(
        k.decode()
        for k, e in records
        if e["sourceMetadata"]["table"] == table and e["sourceMetadata"]["operation"] == "SNAPSHOT"
    )


def test_snapshot_command_on_a_running_capture(
    capture_run: CaptureRun,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = capture_run
    base = make_pipeline(
        run.schema,
        run.topic.removeprefix("raw-"),
        raw_topic={"name": run.topic, "partitions": 1},
        replication={"snapshot_chunk_size": 20},
        outbox=None,
    )
    run.pipeline = _only(base, "car_entities", "loan_entities")
    run.sql(
        "INSERT INTO car_entities (id, vin, make, model, model_year) "
        "SELECT 'C' || lpad(g::text, 3, '0'), 'V', 'M', 'X', g % 10 FROM generate_series(1, 100) g"
    )
    pfile = tmp_path / "pipeline.yaml"
    doc = run.pipeline.model_dump(by_alias=True, exclude={"source_file", "connections"}, exclude_none=True)
    YAML().dump(doc, pfile)
    monkeypatch.setenv("CDCROUTER_STATE_DIR", str(run.state_dir))
    engine = run.start()  # returns once the initial snapshot is done
    assert len(read_topic(run.conns, run.topic, expect=100)) == 100

    def cli(*args: str) -> int:
        return main(["capture", "snapshot", "--pipeline", str(pfile), *args])

    assert cli("--table", "car_entities", "--where", "model_year >= 5") == 0
    assert "requested" in capsys.readouterr().out
    run.sql("INSERT INTO loan_entities (id, customer_name) VALUES ('L1', 'c')")  # streams meanwhile

    with psycopg.connect(run.conns.postgres.conninfo(), options=f"-c search_path={run.schema}") as conn:
        wanted = {r[0] for r in conn.execute("SELECT id FROM car_entities WHERE model_year >= 5")}
    assert len(wanted) == 50
    records = read_topic(run.conns, run.topic, expect=100 + len(wanted) + 1, timeout_s=60)
    again = {k for k, n in _snapshots(records, "car_entities").items() if n == 2}
    assert again == wanted, f"re-sent {len(again)} rows, wanted {len(wanted)}"
    assert max(_snapshots(records, "car_entities").values()) == 2
    assert [k for k, e in records if e["sourceMetadata"]["operation"] == "INSERT"] == [b"L1"]
    assert len(records) == 100 + len(wanted) + 1
    assert not engine.errors and engine.ready.is_set()  # type: ignore[attr-defined]

    # mistakes are reported (exit 1, with a hint) and never reach the capture
    assert cli("--table", "nope") == 1
    assert "not a captured table" in capsys.readouterr().err
    assert cli("--table", "car_entities", "--where", "true) TO '/tmp/x' --") == 1
    assert "unbalanced" in capsys.readouterr().err
    assert cli("--table", "car_entities", "--where", "no_such_column > 1") == 1
    assert "not a valid condition" in capsys.readouterr().err
    time.sleep(1)
    assert len(read_topic(run.conns, run.topic, timeout_s=30)) == len(records)


def test_a_table_added_to_the_pipeline_is_snapshotted_on_restart_once(capture_run: CaptureRun) -> None:
    run = capture_run
    base = make_pipeline(
        run.schema,
        run.topic.removeprefix("raw-"),
        raw_topic={"name": run.topic, "partitions": 1},
        outbox=None,
    )
    run.sql(
        "INSERT INTO car_entities (id, vin, make, model) "
        "SELECT 'C' || g, 'V', 'M', 'X' FROM generate_series(1, 30) g",
        "INSERT INTO loan_entities (id, customer_name) SELECT 'L' || g, 'c' FROM generate_series(1, 20) g",
    )
    run.pipeline = _only(base, "car_entities")
    run.start()
    run.stop()
    run.pipeline = _only(base, "car_entities", "loan_entities")
    run.start()  # ready once the new table's snapshot is done
    run.sql("UPDATE loan_entities SET status = 'APPROVED' WHERE id = 'L1'")
    records = read_topic(run.conns, run.topic, expect=30 + 20 + 1)
    run.stop()
    run.start()  # the same pipeline again: nothing new to snapshot
    run.sql("UPDATE loan_entities SET status = 'PAID' WHERE id = 'L1'")
    records = read_topic(run.conns, run.topic, expect=30 + 20 + 2)
    run.stop()

    cars, loans = _snapshots(records, "car_entities"), _snapshots(records, "loan_entities")
    assert len(cars) == 30 and set(cars.values()) == {1}, "the known table was snapshotted again"
    assert len(loans) == 20 and set(loans.values()) == {1}
    updates = [e for _, e in records if e["sourceMetadata"]["operation"] == "UPDATE"]
    assert [e["eventBody"]["entities"][0]["updatedAttributes"]["status"] for e in updates] == [
        "APPROVED",
        "PAID",
    ]
    assert len(records) == 30 + 20 + 2
