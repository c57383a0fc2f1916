"""``cdcrouter deploy --target flink`` through the CLI on the real SQL Gateway: the compiler's script,
placeholders filled from the connections, plan, apply, status, stop/resume, list, delete."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdcrouter.cli.main import main

pytestmark = [pytest.mark.integration, pytest.mark.flink]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "filters.yaml"


def test_cli_deploy_lifecycle_on_flink(stack_with, unique_name, tmp_path, monkeypatch, capsys) -> None:
    from cdcrouter.topics import admin_client, apply_topics, plan_topics, topics_for

    stack = stack_with("kafka", "registry", "flink")
    monkeypatch.setenv("CDCROUTER_KAFKA__BOOTSTRAP_SERVERS", stack.kafka_bootstrap)
    monkeypatch.setenv("CDCROUTER_REGISTRY__URL", stack.registry_url)
    monkeypatch.setenv("CDCROUTER_FLINK__SQL_GATEWAY_URL", stack.sql_gateway_url)
    monkeypatch.setenv("CDCROUTER_FLINK__REST_URL", stack.flink_rest_url)
    base = unique_name("cli")
    filters = tmp_path / "filters.yaml"
    filters.write_text(EXAMPLES.read_text().replace("outputTopic: ", f"outputTopic: {base}-"))
    raw = f"{base}-raw"
    admin = admin_client(stack.kafka_conf())
    apply_topics(admin, plan_topics(admin, topics_for(filters, raw_topic=raw)))

    def run(*args: str) -> tuple[int, str]:
        code = main(["deploy", *args, "--state-dir", str(tmp_path / "state")])
        out = capsys.readouterr()
        return code, out.out + out.err

    args = ["--target", "flink", "-f", str(filters), "--name", base, "--raw-topic", raw]
    code, out = run(*args, "--dry-run")
    assert code == 0 and "+ create" in out and f"cdcrouter:{base}:" in out, out
    try:
        code, out = run(*args, "--yes")
        assert code == 0 and "job_id" in out, out
        code, out = run("status", "--name", base)
        assert code == 0 and "state: RUNNING" in out, out
        assert run(*args, "--yes")[1].count("nothing to do") == 1
        code, out = run("stop", "--name", base)
        assert code == 0 and "savepoint" in out, out
        assert "state: STOPPED" in run("status", "--name", base)[1]
        code, out = run("resume", "--name", base)
        assert code == 0, out
        code, out = run("list")
        assert code == 0 and base in out and "RUNNING" in out
    finally:
        code, out = run("delete", "--name", base, "--yes")
    assert code == 0 and "deleted" in out
    assert "NOT DEPLOYED" in run("status", "--name", base)[1]
