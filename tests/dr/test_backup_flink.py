"""``dr backup --flink-rest``: a savepoint of the running cdcrouter Flink job, the job left running.
The oracle is the JobManager's own REST API (the job's checkpoint history and state)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from cdcrouter.cli.main import main
from cdcrouter.dr.drill import region_env
from cdcrouter.dr.pipeline import DrillPipeline

pytestmark = [pytest.mark.integration, pytest.mark.flink]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "filters.yaml"


def test_backup_takes_a_savepoint_of_the_running_job(
    stack_with, unique_name, tmp_path, monkeypatch, capsys
) -> None:
    from cdcrouter.topics import admin_client, apply_topics, plan_topics, topics_for

    stack = stack_with("kafka", "registry", "flink")
    for key, value in region_env(stack.connections).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CDCROUTER_FLINK__SQL_GATEWAY_URL", stack.sql_gateway_url)
    monkeypatch.setenv("CDCROUTER_FLINK__REST_URL", stack.flink_rest_url)
    base = unique_name("drbkf")
    filters = tmp_path / "filters.yaml"
    filters.write_text(EXAMPLES.read_text().replace("outputTopic: ", f"outputTopic: {base}-"))
    raw = f"{base}-raw"
    admin = admin_client(stack.kafka_conf())
    apply_topics(admin, plan_topics(admin, topics_for(filters, raw_topic=raw)))
    state = tmp_path / "state"
    run = DrillPipeline(base, tmp_path / "pipeline")
    run.write_files()

    def cli(*args: str) -> tuple[int, str]:
        code = main([*args, "--state-dir", str(state)])
        out = capsys.readouterr()
        return code, out.out + out.err

    code, out = cli(
        "deploy", "--target", "flink", "-f", str(filters), "--name", base, "--raw-topic", raw, "--yes"
    )
    assert code == 0 and "job_id" in out, out
    try:
        saved = json.loads((state / "deploy" / f"flink-{base}.json").read_text())
        job_id = saved["job_id"]
        out_dir = tmp_path / "bk"
        code, out = cli("dr", "backup", "--out", str(out_dir), "--pipeline", str(run.pipeline_file),
                        "--no-backup-slot", "--flink-rest", stack.flink_rest_url)  # fmt: skip
        assert code == 0, out
        flink = json.loads((out_dir / "flink.json").read_text())
        assert [d["file"] for d in flink["deployments"]] == [f"flink-{base}.json"]
        assert [s["job_id"] for s in flink["savepoints"]] == [job_id]  # only this state dir's job
        location = flink["savepoints"][0]["savepoint"]
        # the JobManager: a completed savepoint at that location, and the job still running
        history = httpx.get(f"{stack.flink_rest_url}/jobs/{job_id}/checkpoints", timeout=30).json()["history"]
        savepoints = [h for h in history if h.get("is_savepoint") and h.get("status") == "COMPLETED"]
        assert any(h.get("external_path") == location for h in savepoints), (location, savepoints)
        assert httpx.get(f"{stack.flink_rest_url}/jobs/{job_id}", timeout=30).json()["state"] == "RUNNING"
    finally:
        code, out = cli("deploy", "delete", "--name", base, "--yes")
