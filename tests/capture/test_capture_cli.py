"""`cdcrouter capture run|status` and `connector render` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from capture_helpers import CaptureRun

from cdcrouter.cli.main import main


@pytest.mark.integration
def test_run_then_status(
    capture_run: CaptureRun,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    p = capture_run.pipeline
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        f"schema: {capture_run.schema}\n"
        f"raw_topic: {{name: {p.raw_topic.name}, partitions: 1}}\n"
        f"replication: {{slot: {p.replication.slot}, publication: {p.replication.publication}}}\n"
        "tables:\n  car_entities: {}\n"
    )
    capture_run.sql("INSERT INTO car_entities (id, vin, make, model) VALUES ('C1', 'V', 'M', 'X')")
    monkeypatch.setenv("CDCROUTER_STATE_DIR", str(capture_run.state_dir))
    assert main(["capture", "run", "--pipeline", str(pipeline), "--duration", "3"]) == 0
    err = capsys.readouterr().err
    assert "snapshot of car_entities done: 1 rows" in err and "stopped:" in err
    assert main(["capture", "status", "--pipeline", str(pipeline), "--format", "json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["slot_exists"] is True and status["active"] is False
    assert status["wal_status"] in ("reserved", "extended")
    assert status["retained_wal_bytes"] >= 0
    assert status["kafka"]["events_total"] == 1
    assert status["kafka"]["snapshot_done"] is True
    assert status["kafka"]["last_event_time"].endswith("Z")


def test_connector_render_never_inlines_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("tables:\n  car_entities: {}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CDCROUTER_POSTGRES__PASSWORD", "s3cret-value")
    for target in ("connect", "confluent-cloud"):
        assert main(["connector", "render", "--pipeline", str(pipeline), "--target", target]) == 0
        out = capsys.readouterr().out
        assert "s3cret-value" not in out
        cfg = json.loads(out)
        cfg = cfg.get("config", cfg)
        assert cfg["plugin.name"] == "pgoutput"
        assert cfg["database.password"].startswith("${")
    assert main(["connector", "render", "--pipeline", str(pipeline), "--target", "nope"]) == 2
