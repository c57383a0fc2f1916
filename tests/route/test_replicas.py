"""Replicas are safe by default: the instance id defaults to the host name, and a second router on
one host with the same id is refused at once instead of fencing the first one's transactions.

Before: ``--instance-id`` defaulted to ``0``, so two replicas started with defaults fenced each
other until the router gave up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cdcrouter.errors import RouteError
from cdcrouter.route.engine import RouterOptions
from cdcrouter.route.instance import InstanceLock, lock_dir

from .routekit import RouteEnv
from .test_router import _actual, _expected

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("kafka", "registry")]


def _spawn(env: RouteEnv, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "cdcrouter.cli.main", "run", "--filters", str(env.filters_path)]
    cmd += ["--raw-topic", env.raw, "--group", env.prefix + "g", "--no-reload"]  # no --instance-id
    proc_env = {
        **{k: v for k, v in os.environ.items() if k != "CDCROUTER_INSTANCE_ID"},
        "CDCROUTER_KAFKA__BOOTSTRAP_SERVERS": env.conns.kafka.bootstrap_servers,
        "CDCROUTER_REGISTRY__URL": env.conns.registry.url,
    }
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=proc_env, stdout=out, stderr=subprocess.STDOUT)


def test_the_default_instance_id_is_the_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CDCROUTER_INSTANCE_ID", raising=False)
    opts = RouterOptions(group_id="g")
    assert opts.instance_id == socket.gethostname()
    host = socket.gethostname()
    assert opts.transactional_ids == [f"cdcrouter-router.g.{host}", f"cdcrouter-router.g.{host}.lane1"]


def test_a_second_router_with_the_default_id_on_one_host_is_refused_at_once(
    route_env: RouteEnv, tmp_path: Path
) -> None:
    env = route_env
    group = env.prefix + "g"
    events = env.produce(0, 500)
    first = _spawn(env, tmp_path / "first.log")
    try:
        env.wait_committed(group, 500)
        began = time.monotonic()
        second = _spawn(env, tmp_path / "second.log")
        assert second.wait(60) == 1, (tmp_path / "second.log").read_text()
        refused_after = time.monotonic() - began
        said = (tmp_path / "second.log").read_text()
        assert "already runs as instance" in said and "--instance-id" in said, said
        assert "Traceback" not in said
        assert refused_after < 30  # at once, not after a fencing war
        # the lock the first one holds is where lock_dir() says for the routers' environment (the
        # state dir, the user's runtime dir or ./.cdcrouter: CI sets none of them), never in /tmp
        held = f"pid {first.pid}".encode()
        locks = lock_dir()
        assert locks != Path(tempfile.gettempdir()).resolve()
        assert [p.read_bytes() for p in locks.glob("cdcrouter-router-*.lock")].count(held) == 1
        in_tmp = Path(tempfile.gettempdir()).glob("cdcrouter-router-*.lock")
        assert held not in [p.read_bytes() for p in in_tmp]
        events += env.produce(500, 500)  # the first goes on, untouched
        env.wait_committed(group, 1_000)
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        code = first.wait(60)
    assert code == 0, (tmp_path / "first.log").read_text()
    assert "fenced" not in (tmp_path / "first.log").read_text()
    assert _actual(env) == _expected(env, events)


def test_without_a_state_dir_the_lock_is_in_the_user_runtime_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lock files were created in /tmp (about 57 left per test run); with no CDCROUTER_STATE_DIR
    they now go to $XDG_RUNTIME_DIR/cdcrouter, and the lock still refuses a second holder."""
    monkeypatch.delenv("CDCROUTER_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    lock = InstanceLock.acquire("g", "i")
    try:
        assert lock.path.parent == tmp_path / "cdcrouter"
        with pytest.raises(RouteError, match="already runs as instance 'i'"):
            InstanceLock.acquire("g", "i")
    finally:
        lock.release()
    InstanceLock.acquire("g", "i").release()  # free again once released
    assert [p.name for p in (tmp_path / "cdcrouter").iterdir()] == [lock.path.name]  # kept, never unlinked
