"""`cdcrouter status` as a probe: exit codes, the JSON keys against docs/operations.md (the
documented list is the oracle), and the routing job's state on a stand-in Confluent Cloud."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from cdcrouter_testing.fake_confluent_cloud import FakeConfluentCloud

from .statuskit import StatusEnv, free_port

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("postgres", "kafka", "registry")]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
OPAQUE = {"capture.snapshot", "jobs[].detail", "filtered_topics[].end_offsets"}  # values, not keys


def documented_keys() -> set[str]:
    """Every key path in the Monitoring section's JSON key table."""
    text = DOCS.read_text()
    section = text[text.index("### JSON keys") : text.index("### Problems it marks")]
    keys: set[str] = set()
    for row in re.findall(r"^\| (`.+?) \|", section, flags=re.M):
        paths = re.findall(r"`([a-z0-9_.\[\]]+)`", row)
        # `a.b[].c`, `...b[].d`: the second spelled from the first's prefix
        keys.update(p if not p.startswith("...") else paths[0].rsplit(".", 2)[0] + "." + p[3:] for p in paths)
    return keys


def documented_codes() -> set[str]:
    text = DOCS.read_text()
    section = text[text.index("### Problems it marks") :]
    return {
        c
        for row in re.findall(r"^\| (`.+?) \|", section, flags=re.M)
        for c in re.findall(r"`([a-z_]+)`", row)
    }


def key_paths(doc: dict[str, Any]) -> set[str]:
    """The document's key paths; the router group's are documented as a filtered topic group's."""
    group = "raw_topic.router_group."
    return {
        "filtered_topics[].groups[]." + p[len(group) :] if p.startswith(group) else p for p in _paths(doc)
    }


def _paths(value: Any, prefix: str = "") -> set[str]:
    """``a.b``, ``a.c[].d``, ...: every key path in a JSON document (lists merged over items)."""
    out: set[str] = set()
    if isinstance(value, dict) and prefix not in OPAQUE:
        for k, v in value.items():
            path = f"{prefix}.{k}" if prefix else k
            out.add(path)
            out |= _paths(v, path)
    elif isinstance(value, list):
        for item in value:
            out |= _paths(item, f"{prefix}[]")
    return out


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch):
    with FakeConfluentCloud(api_key="KEY1", api_secret="s3cret", step_seconds=0.02) as fake:
        settings = {
            "FLINK_ENDPOINT": fake.url, "ORGANIZATION_ID": fake.organization_id,
            "ENVIRONMENT_ID": fake.environment_id, "COMPUTE_POOL_ID": "lfcp-1", "PRINCIPAL": "sa-1",
            "CATALOG": "env", "DATABASE": "cluster", "FLINK_API_KEY": "KEY1", "FLINK_API_SECRET": "s3cret",
        }  # fmt: skip
        for k, v in settings.items():
            monkeypatch.setenv(f"CDCROUTER_CONFLUENT_CLOUD__{k}", v)
        yield fake


def test_json_keys_are_the_documented_ones_and_problems_mark_a_stopped_job(
    status_env: StatusEnv, cloud: FakeConfluentCloud
) -> None:
    """Every section filled (a member, a lagging consumer group, a DLQ record, a stopped statement):
    the document's key paths are exactly the documented ones."""
    from confluent_kafka import Producer

    from cdcrouter.cli.main import main

    env = status_env
    deploy = ["--target", "confluent-cloud", "--filters", str(env.filters_file), "--name", "routing"]
    assert main(["deploy", *deploy, "--yes"]) in (0, None)
    env.start_capture()
    env.start_router()
    env.insert_cars(3)
    env.wait_count(f"{env.name}-cars", 6)
    with env.consuming(f"{env.name}-fleet", f"{env.name}-cars") as read:  # commits, then stops
        env.wait_read(read, 6)
    env.insert_cars(1)  # the stopped consumer now lags
    producer = Producer(env.conns.kafka.producer_conf())
    producer.produce(env.raw, b"\x00garbage", b"k")
    assert producer.flush(30) == 0
    env.wait_count(f"{env.raw}.router.dlq", 1)

    env.wait_count(f"{env.name}-car-updates", 4)  # every update routed: the count below is final
    audit = f"{env.name}-audit"
    with env.consuming(audit, f"{env.name}-car-updates", commit=False) as read:  # reads, never commits
        env.wait_read(read, 4)
        code, running = env.status_json("--deploy-target", "confluent-cloud", "--deploy-name", "routing")
    # a group that reads a filtered topic without a commit yet is shown too, all its records as lag
    groups = {g["group"]: g for x in running["filtered_topics"] for g in x["groups"]}
    assert groups[audit]["members"] and all(r["committed"] is None for r in groups[audit]["partitions"])
    assert groups[audit]["lag"] == env.count(f"{env.name}-car-updates")
    assert code == 0  # unhealthy, but without --exit-code the view itself succeeded
    assert [j["state"] for j in running["jobs"]] == ["RUNNING"]
    assert main(["deploy", "stop", "--target", "confluent-cloud", "--name", "routing"]) in (0, None)
    code, doc = env.status_json(
        "--deploy-target", "confluent-cloud", "--deploy-name", "routing", "--exit-code"
    )

    assert code == 3
    assert [(j["state"], j["ok"]) for j in doc["jobs"]] == [("STOPPED", False)]
    codes = {p["code"] for p in doc["problems"]}
    assert {"job_not_running", "dlq_not_empty", "consumer_stalled"} <= codes
    assert codes <= documented_codes()
    assert sorted(key_paths(doc) ^ documented_keys()) == []


def test_usage_and_user_errors_keep_their_exit_codes(status_env: StatusEnv, tmp_path: Path, capsys) -> None:
    from cdcrouter.cli.main import main

    assert main(["status", "--format", "xml"]) == 2
    assert main(["status", "--interval", "0"]) == 2
    capsys.readouterr()
    missing = tmp_path / "nope.yaml"
    assert main(["status", "--pipeline", str(missing), "--exit-code"]) == 1
    err = capsys.readouterr().err
    assert "nope.yaml" in err and "Traceback" not in err


def test_watch_refreshes_until_interrupted(status_env: StatusEnv) -> None:
    """The real command in its own process: one JSON document per refresh, Ctrl-C ends it cleanly
    (exit 3 with --exit-code: no router runs and the raw topic holds unrouted records)."""
    import json
    import os
    import signal
    import subprocess
    import sys

    env = status_env
    env.start_capture()
    env.insert_cars(1)
    env.wait_count(env.raw, 2)
    env.start_router()  # the router commits, so its group is judged; then it stops
    env.wait_count(f"{env.name}-cars", 2)
    env.halt("router")
    env.insert_cars(1)
    args = [
        sys.executable, "-m", "cdcrouter.cli.main", "status", "--pipeline", str(env.pipeline_file),
        "--filters", str(env.filters_file), "--group", env.group, "--interval", "0.5",
        "--watch", "--format", "json", "--exit-code",
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)
    try:
        assert proc.stdout is not None
        docs = [json.loads(proc.stdout.readline()) for _ in range(2)]
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [d["version"] for d in docs] == [1, 1] and docs[0]["generated_at"] < docs[1]["generated_at"]
    assert all("router_stalled" in {p["code"] for p in d["problems"]} for d in docs), docs[1]["problems"]
    assert code == 3, proc.stderr.read() if proc.stderr else ""


def test_a_recorded_flink_deployment_is_shown_and_marked_when_its_jobmanager_is_gone(
    status_env: StatusEnv, stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --deploy-target, the Flink deployments `deploy` recorded in the state dir are looked
    at; one whose JobManager does not answer is marked (exit 3), and the view still completes."""
    import json
    import shutil

    env = status_env
    state = tmp_path / "state"
    (state / "deploy").mkdir(parents=True)
    for name in ("endpoints.json", "secrets/postgres-password"):  # the running stack's endpoints
        if (Path(stack.state_dir) / name).is_file():
            (state / name).parent.mkdir(exist_ok=True)
            shutil.copy(Path(stack.state_dir) / name, state / name)
    (state / "deploy" / "flink-routing.json").write_text(json.dumps({"name": "routing", "job_id": "x"}))
    missing = f"{env.name}-never-created"  # a filter whose topic nobody created
    env.filters_file.write_text(
        env.filters_file.read_text()
        + f"""  - id: vans
    consumerId: fleet
    outputTopic: {missing}
    enabled: true
    conditions:
      - field: eventBody.entities[0].entityType
        operator: equals
        value: Van
"""
    )
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("CDCROUTER_FLINK__REST_URL", closed)

    code, doc = env.status_json(
        "--state-dir", str(state), "--exit-code", "--router-metrics", f"{closed}/metrics", capture=False
    )

    assert code == 3
    assert [(j["target"], j["name"], j["state"], j["ok"]) for j in doc["jobs"]] == [
        ("flink", "routing", "UNREACHABLE", False)
    ]
    assert [p["where"] for p in doc["problems"] if p["code"] == "job_not_running"] == ["flink:routing"]
    # a missing filtered topic is marked, and keeps the keys of an existing one
    assert [p["where"] for p in doc["problems"] if p["code"] == "topic_missing"] == [missing]
    topics = {x["name"]: x for x in doc["filtered_topics"]}
    assert topics[missing]["exists"] is False and set(topics[missing]) == set(topics[f"{env.name}-cars"])
    # a router metrics URL that does not answer is marked too
    assert [p["where"] for p in doc["problems"] if p["code"] == "router_metrics_unreachable"] == [
        f"{closed}/metrics"
    ]


def test_watch_goes_on_through_an_outage(status_env: StatusEnv) -> None:
    """A refresh that cannot be read (here PostgreSQL does not answer) is shown as an error
    document and the watch keeps refreshing; as a probe it counts as unhealthy."""
    import json
    import os
    import signal
    import subprocess
    import sys

    env = status_env
    args = [
        sys.executable, "-m", "cdcrouter.cli.main", "status", "--pipeline", str(env.pipeline_file),
        "--filters", str(env.filters_file), "--interval", "0.3", "--watch", "--format", "json", "--exit-code",
    ]  # fmt: skip
    down = {**os.environ, "CDCROUTER_POSTGRES__PORT": str(free_port())}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=down)
    try:
        assert proc.stdout is not None
        docs = [json.loads(proc.stdout.readline()) for _ in range(2)]
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [sorted(d) for d in docs] == [["error", "generated_at", "healthy", "version"]] * 2
    assert all(d["healthy"] is False and "PostgreSQL" in d["error"]["message"] for d in docs)
    assert code == 3
