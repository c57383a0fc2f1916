"""Capture refuses what it cannot do correctly, with a clear error and a hint (no traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from capture_helpers import CaptureRun, make_pipeline

from cdcrouter.capture import CaptureEngine
from cdcrouter.cli.main import main
from cdcrouter.errors import CaptureError

pytestmark = pytest.mark.integration


def _engine_error(run: CaptureRun) -> CaptureError:
    with pytest.raises(CaptureError) as info:
        CaptureEngine(run.pipeline, run.conns).run(duration_s=5)
    assert info.value.hint
    return info.value


def test_table_without_primary_key(capture_run: CaptureRun) -> None:
    capture_run.sql("CREATE TABLE audit_log (at timestamptz, what text)")
    capture_run.pipeline = make_pipeline(capture_run.schema, "nopk", tables={"audit_log": {}}, outbox=None)
    err = _engine_error(capture_run)
    assert "audit_log has no primary key" in err.message
    assert "tables.audit_log.entity_id" in (err.hint or "")


def test_unsupported_column_type(capture_run: CaptureRun) -> None:
    capture_run.sql("CREATE TABLE garages (id text PRIMARY KEY, location point)")
    capture_run.pipeline = make_pipeline(capture_run.schema, "badtype", tables={"garages": {}}, outbox=None)
    err = _engine_error(capture_run)
    assert "garages.location has type point" in err.message
    assert "exclude_columns" in (err.hint or "")


def test_dropped_slot_is_reported_on_restart(capture_run: CaptureRun) -> None:
    from cdcrouter.capture import source

    run = capture_run
    run.start()
    run.stop()
    conn = source.connect_sql(run.conns.postgres)
    source.drop_slot(conn, run.pipeline.replication.slot)
    conn.close()
    err = _engine_error(run)
    assert f"replication slot {run.pipeline.replication.slot} is gone" in err.message
    assert "--resnapshot" in (err.hint or "")


def test_wrong_credentials_through_the_cli(
    capture_run: CaptureRun,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(f"schema: {capture_run.schema}\ntables:\n  car_entities: {{}}\n")
    monkeypatch.setenv("CDCROUTER_STATE_DIR", str(capture_run.state_dir))
    monkeypatch.setenv("CDCROUTER_POSTGRES__PASSWORD", "certainly-not-the-password")
    code = main(["capture", "run", "--pipeline", str(pipeline), "--duration", "5"])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: cannot connect to PostgreSQL" in err
    assert "password authentication failed" in err
    assert "hint: check the PostgreSQL user and password" in err
    assert "Traceback" not in err
