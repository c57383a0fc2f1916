"""Stack lifecycle on a private state dir: kill -9 and recovery, idempotent up, clear failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from cdcrouter.cli.main import main
from cdcrouter.errors import StackError
from cdcrouter.stack.manager import Stack

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdcrouter.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
        check=False,
    )


@pytest.fixture
def scratch_dir():
    """A state dir outside pytest's basetemp: pytest resets ``/tmp/pytest-of-<user>`` to 0700
    whenever a session starts, which would lock the ``postgres`` user out of its data dir."""
    path = Path(tempfile.mkdtemp(prefix="cdcrouter-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def private_stack(scratch_dir: Path):
    stack = Stack(scratch_dir / "state", ports={"postgres": free_port()})
    yield stack
    stack.down(purge=True)


def test_kill_9_is_reported_and_up_restores(private_stack: Stack, capsys):
    assert private_stack.up(["postgres"]) == ["postgres"]
    conninfo = private_stack.connections().postgres.conninfo()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE survives (x int)")
    pid = private_stack.record("postgres").pid

    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and private_stack.running_record("postgres"):
        time.sleep(0.1)

    assert main(["stack", "status", "--format", "json", "--state-dir", str(private_stack.state_dir)]) == 0
    status = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert status["postgres"]["state"] == "dead"
    assert status["kafka"]["state"] == "stopped"

    assert private_stack.up(["postgres"]) == ["postgres"]
    assert private_stack.record("postgres").pid != pid
    assert [s.state for s in private_stack.status(["postgres"])] == ["running"]
    with psycopg.connect(conninfo) as conn:  # same data dir: the table is still there
        assert conn.execute("SELECT count(*) FROM survives").fetchone() == (0,)

    assert private_stack.up(["postgres"]) == []  # second up: a no-op
    assert main(["stack", "logs", "postgres", "-n", "3", "--state-dir", str(private_stack.state_dir)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    stopped = private_stack.down(["postgres"])
    assert stopped == ["postgres"]
    assert [s.state for s in private_stack.status(["postgres"])] == ["stopped"]
    assert (private_stack.state_dir / "postgres" / "data" / "PG_VERSION").is_file()  # down keeps data


def test_port_in_use_names_service_and_port(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = cli(
            "stack", "up", "--only", "postgres", "--port", f"postgres={port}", "--state-dir", str(tmp_path)
        )
    assert out.returncode == 1, out.stderr
    assert f"postgres cannot start: port {port} (postgres)" in out.stderr
    assert "already in use" in out.stderr and "--port postgres=N" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_java_is_a_clear_error(tmp_path: Path):
    ports = ["--port", f"kafka={free_port()}", "--port", f"kafka-controller={free_port()}"]
    out = cli(
        "stack",
        "up",
        "--only",
        "kafka",
        *ports,
        "--state-dir",
        str(tmp_path),
        env={"JAVA_HOME": str(tmp_path)},
    )
    assert out.returncode == 1
    assert f"error: JAVA_HOME={tmp_path} has no bin/java" in out.stderr
    assert "hint:" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "kafka.pid").exists()


def test_empty_jar_cache_is_a_clear_error(tmp_path: Path):
    cache = tmp_path / "cache"
    cache.mkdir()
    ports = ["--port", f"kafka={free_port()}", "--port", f"kafka-controller={free_port()}"]
    args = ("stack", "up", "--only", "kafka", "--no-fetch", *ports, "--state-dir", str(tmp_path / "s"))
    out = cli(*args, env={"CDCROUTER_STACK_CACHE": str(cache)})
    assert out.returncode == 1
    assert f"the jar cache {cache}/kafka-" in out.stderr and "has no Kafka" in out.stderr
    assert "cdcrouter stack fetch" in out.stderr and "Traceback" not in out.stderr

    # a cache folder stamped complete whose jars are gone is caught the same way
    broken = cache / "kafka-x"
    (broken / "lib").mkdir(parents=True)
    (broken / ".complete").write_text("")
    from cdcrouter.stack.fetch import require

    with pytest.raises(StackError, match="has no Kafka jars"):
        require(broken, "Kafka jars", "lib/kafka_2.13-*.jar")


def test_shared_stack_endpoints_feed_the_config_loader(stack):
    from cdcrouter.config import load_connections

    loaded = load_connections(config_file=None, state_dir=stack.state_dir)
    assert loaded.kafka.bootstrap_servers == stack.kafka_bootstrap
    assert loaded.registry.url == stack.registry_url
    assert loaded.postgres.port == stack.connections.postgres.port
    assert (
        loaded.postgres.password.get_secret_value() == stack.connections.postgres.password.get_secret_value()
    )
    secret = stack.state_dir / "secrets" / "postgres-password"
    assert secret.stat().st_mode & 0o077 == 0  # mode 600
    assert secret.read_text().strip() not in (stack.state_dir / "endpoints.json").read_text()
    assert stack.stack.up(["postgres", "kafka", "registry"]) == []  # running: up is a no-op


def test_registry_keeps_schema_ids_across_a_restart(scratch_dir: Path):
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    stack = Stack(scratch_dir / "state", ports={"registry": free_port(), "registry-management": free_port()})
    try:
        stack.up(["registry"])
        url = stack.connections().registry.url
        schema = '{"type": "record", "name": "Kept", "fields": [{"name": "a", "type": "int"}]}'
        schema_id = SchemaRegistryClient({"url": url, "timeout": 30}).register_schema(
            "kept-value", Schema(schema, "AVRO")
        )
        stack.down(["registry"])
        assert stack.up(["registry"]) == ["registry"]
        fetched = SchemaRegistryClient({"url": url, "timeout": 30}).get_schema(
            schema_id
        )  # H2 file storage: still there
        assert json.loads(fetched.schema_str)["name"] == "Kept"
    finally:
        stack.down(purge=True)


@pytest.mark.parametrize("ci", ["true", ""])
def test_fixture_fails_in_ci_and_skips_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ci: str):
    from cdcrouter_testing.stack_fixtures import _Session

    monkeypatch.setenv("CI", ci)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        session = _Session(Stack(tmp_path, ports={"postgres": busy.getsockname()[1]}))
        expected = pytest.fail.Exception if ci else pytest.skip.Exception
        with pytest.raises(expected, match="already in use"):
            session.ensure(("postgres",))
        with pytest.raises(expected, match="already in use"):  # remembered: no second attempt
            session.ensure(("postgres",))
    assert session.started == []
