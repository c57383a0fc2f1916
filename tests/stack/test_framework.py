"""The service framework without services: ordering, ports, Java lookup, PID identity (no JVM)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdcrouter.errors import StackError, UsageError
from cdcrouter.stack.manager import Stack, parse_port_overrides
from cdcrouter.stack.process import ProcessRecord, is_alive, port_is_free, spawn, start_ticks, stop, tail
from cdcrouter.stack.service import DEFAULT_PORTS, find_java


def test_only_pulls_in_dependencies_in_start_order(tmp_path: Path):
    stack = Stack(tmp_path)
    assert [s.name for s in stack.resolve(["connect"])] == ["kafka", "registry", "connect"]
    assert [s.name for s in stack.resolve(["connect", "postgres"])] == [
        "postgres",
        "kafka",
        "registry",
        "connect",
    ]
    names = [s.name for s in stack.resolve(None)]
    assert names[:4] == ["postgres", "kafka", "registry", "connect"]
    if "sql-gateway" in stack.services:  # Flink plugged in: `flink` is a group, default up includes it
        flink = [s.name for s in stack.resolve(["flink"])]
        assert "sql-gateway" in flink and "sql-gateway" in names
    with pytest.raises(UsageError, match="unknown service kafak"):
        stack.resolve(["kafak"])


def test_ports_flags_beat_env_beat_recorded_beat_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert parse_port_overrides(["kafka=19092", "sql-gateway=18091"]) == {
        "kafka": 19092,
        "sql-gateway": 18091,
    }
    for bad in ("kafka", "nope=1", "kafka=0", "kafka=x"):
        with pytest.raises(UsageError):
            parse_port_overrides([bad])
    for key in DEFAULT_PORTS:  # start from a clean environment
        monkeypatch.delenv("CDCROUTER_STACK_PORT_" + key.upper().replace("-", "_"), raising=False)
    (tmp_path / "ports.json").write_text('{"kafka": 29092, "registry": 28080}')
    for name in [n for n in os.environ if n.startswith("CDCROUTER_STACK_PORT_")]:
        monkeypatch.delenv(name)  # the caller's own overrides must not leak into this check
    monkeypatch.setenv("CDCROUTER_STACK_PORT_REGISTRY", "38080")
    stack = Stack(tmp_path, ports={"postgres": 45432})
    assert stack.ctx.ports == {**DEFAULT_PORTS, "kafka": 29092, "registry": 38080, "postgres": 45432}


def _fake_java(folder: Path, version: str) -> Path:
    folder.mkdir(parents=True)
    java = folder / "java"
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2025-01-01' >&2\n")
    java.chmod(0o755)
    return java


def test_find_java(tmp_path: Path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(StackError, match=r"no Java found: .* need Java 17\+"):
        find_java({"PATH": str(empty)}, jvm_root=empty)
    with pytest.raises(StackError, match="JAVA_HOME=/nonexistent has no bin/java"):
        find_java({"JAVA_HOME": "/nonexistent", "PATH": ""}, jvm_root=empty)
    old = _fake_java(tmp_path / "old" / "bin", "11.0.2")
    with pytest.raises(StackError, match=r"no Java 17\+ found; found only: .*old/bin/java \(11\)"):
        find_java({"PATH": str(old.parent)}, jvm_root=empty)
    jvms = tmp_path / "jvm"
    j21 = _fake_java(jvms / "jdk-21" / "bin", "21.0.1")
    _fake_java(jvms / "jdk-25" / "bin", "25.0.3")
    # PATH's java wins when new enough; otherwise the newest suitable JDK under the JVM root
    assert find_java({"PATH": str(j21.parent)}, minimum=17, jvm_root=jvms) == str(j21)
    assert find_java({"PATH": str(old.parent)}, minimum=21, jvm_root=jvms).endswith("jdk-25/bin/java")


def test_process_records_survive_pid_reuse_and_zombies(tmp_path: Path):
    log = tmp_path / "logs" / "sleeper.log"
    pid = spawn(
        [sys.executable, "-c", "import time; print('hello', flush=True); time.sleep(60)"],
        log_file=log,
        cwd=tmp_path,
        env=dict(os.environ),
    )
    rec = ProcessRecord(
        pid=pid, start_ticks=start_ticks(pid) or 0, version="1", ports={}, started_at=time.time()
    )
    rec.dump(tmp_path / "run" / "sleeper.pid")
    assert ProcessRecord.load(tmp_path / "run" / "sleeper.pid") == rec
    assert is_alive(rec)
    assert not is_alive(ProcessRecord(pid, rec.start_ticks + 1, "1", {}, 0.0))  # same PID, other process
    deadline = time.monotonic() + 10
    while "hello" not in tail(log) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tail(log)[-1] == "hello"
    os.kill(pid, signal.SIGKILL)  # our own child: without reaping it would linger as a zombie
    deadline = time.monotonic() + 5
    while is_alive(rec) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_alive(rec)
    assert stop(rec) is False  # nothing left to stop


def test_stop_escalates_to_sigkill(tmp_path: Path):
    code = "import signal as s, time; s.signal(s.SIGTERM, s.SIG_IGN); print('up', flush=True); time.sleep(9)"
    log = tmp_path / "stubborn.log"
    pid = spawn([sys.executable, "-c", code], log_file=log, cwd=tmp_path, env=dict(os.environ))
    while "up" not in tail(log):
        time.sleep(0.05)
    rec = ProcessRecord(pid, start_ticks(pid) or 0, "1", {}, time.time())
    started = time.monotonic()
    assert stop(rec, timeout=0.5) is True
    assert not is_alive(rec) and time.monotonic() - started < 5


def test_port_is_free():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not port_is_free(port)
    assert port_is_free(port)


def test_cli_stack_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "cdcrouter.cli.main", "stack", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0
    for cmd in ("fetch", "up", "down", "status", "logs"):
        assert cmd in out.stdout


def test_leftovers_of_a_killed_leader_are_found_and_killed(tmp_path: Path):
    from cdcrouter.stack.process import kill_leftovers, leftovers

    log = tmp_path / "tree.log"
    code = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print('child', p.pid, flush=True); time.sleep(60)"
    )
    pid = spawn([sys.executable, "-c", code], log_file=log, cwd=tmp_path, env=dict(os.environ))
    deadline = time.monotonic() + 10
    while not any(ln.startswith("child") for ln in tail(log)) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(next(ln for ln in tail(log) if ln.startswith("child")).split()[1])
    rec = ProcessRecord(pid, start_ticks(pid) or 0, "1", {}, time.time())
    os.kill(pid, signal.SIGKILL)  # the leader dies, like a postmaster under kill -9
    while is_alive(rec):
        time.sleep(0.05)
    assert leftovers(rec) == [child]
    assert kill_leftovers(rec) == [child]
    assert leftovers(rec) == []


def test_kafka_cluster_ids_never_look_like_options():
    from cdcrouter.stack.services.kafka import new_cluster_id

    ids = [new_cluster_id() for _ in range(5_000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_start_rotates_an_oversized_log_and_keeps_one_older(tmp_path: Path):
    from cdcrouter.stack.process import rotate_log

    log = tmp_path / "kafka.log"
    assert rotate_log(log, limit=10) is None  # no log yet
    log.write_text("first run\n")
    assert rotate_log(log, limit=100) is None and log.read_text() == "first run\n"
    assert rotate_log(log, limit=5) == tmp_path / "kafka.log.1"
    assert not log.exists() and (tmp_path / "kafka.log.1").read_text() == "first run\n"
    log.write_text("second run\n")
    rotate_log(log, limit=5)
    assert (tmp_path / "kafka.log.1").read_text() == "second run\n"  # the older one is replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kafka.log.1"]


class _JavaCtx:
    """A StackContext stand-in that knows which Javas exist."""

    def __init__(self, newest: str | None) -> None:
        self.newest = newest
        self.java = "/usr/bin/java"

    def java_for(self, minimum: int = 17) -> str:
        if self.newest is None:
            raise StackError(f"no Java {minimum}+ found")
        return self.newest


@pytest.mark.parametrize(
    ("newest", "major", "expected"),
    [
        (None, 17, ("/usr/bin/java", "-XX:+UseG1GC")),  # Java 17 only: Kafka's own G1 settings
        ("/jdk21/bin/java", 21, ("/jdk21/bin/java", "-XX:+UseZGC", "-XX:+ZGenerational")),
        ("/jdk25/bin/java", 25, ("/jdk25/bin/java", "-XX:+UseZGC")),  # generational is the only mode
    ],
)
def test_the_broker_takes_generational_zgc_where_java_has_it(
    newest: str | None, major: int, expected: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
):
    from cdcrouter.stack.services import kafka

    monkeypatch.setattr(kafka, "java_major", lambda java: major)
    java, gc = kafka.Kafka().collector(_JavaCtx(newest))  # type: ignore[arg-type]
    assert (java, *[opt for opt in gc if opt in expected]) == expected
    assert ("-XX:+ZGenerational" in gc) == ("-XX:+ZGenerational" in expected)
    assert ("-XX:+UseG1GC" in gc) == (newest is None)
