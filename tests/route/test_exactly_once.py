"""Exactly-once under ``kill -9``: the router process dies mid-stream and a new one takes over.

The router runs as a real ``cdcrouter run`` process. Events are appended in two parts so the kill
always lands mid-stream (the second part does not exist yet). After the restart (same instance id,
so the new producer fences the dead one's open transaction) every filtered topic, read
read_committed, must hold exactly the expected events, each once: 100,000 events with 10 filters,
as the issue asks (about 45 s on the 2-core machine).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cdcrouter.route.events import bench_filters_yaml, event_key

from .routekit import RouteEnv, decode_filtered, read_topic, setup_env, write_filters
from .test_router import _expected

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("kafka", "registry")]


def _spawn(env: RouteEnv, group: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "cdcrouter.cli.main", "run", "--filters", str(env.filters_path)]
    cmd += ["--raw-topic", env.raw, "--group", group, "--instance-id", "x", "--no-reload", *extra]
    proc_env = {
        **os.environ,
        "CDCROUTER_KAFKA__BOOTSTRAP_SERVERS": env.conns.kafka.bootstrap_servers,
        "CDCROUTER_REGISTRY__URL": env.conns.registry.url,
    }
    with log.open("ab") as out:
        return subprocess.Popen(cmd, env=proc_env, stdout=out, stderr=subprocess.STDOUT)


def _kill9_and_restart(env: RouteEnv, n: int, tmp_path: Path) -> None:
    write_filters(env, bench_filters_yaml(env.prefix, 10))
    group = env.prefix + "g"
    log = tmp_path / "router.log"
    first = n // 5
    proc = _spawn(env, group, log)  # starts up while the first part is written
    events = env.produce(0, first)
    # the rest arrives paced while the router works, so the kill lands inside a busy stream; once
    # the router is dead, the writer writes what is left at full speed (nobody reads it then)
    killed = threading.Event()
    writer = threading.Thread(target=_paced, args=(env, first, n, events, killed), daemon=True)
    try:
        env.wait_committed(group, first, timeout=120)
        writer.start()
        time.sleep(1.0)
        # Read before the kill: afterwards the dead router's open transaction holds the group's
        # offsets pending (unstable) until the restart aborts it, and the broker cannot answer.
        before_kill = env.committed(group)
        assert writer.is_alive() and first <= before_kill < n, "the kill did not land mid-stream"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        killed.set()
        if proc.poll() is None:
            proc.kill()
    # the new router (same instance id: it fences the dead one's open transaction) starts while the
    # writer still appends the rest
    proc = _spawn(env, group, log)
    try:
        writer.join(300)
        assert not writer.is_alive() and len(events) == n, f"only {len(events)}/{n} events written"
        env.wait_committed(group, n, timeout=300)
        proc.send_signal(signal.SIGTERM)  # graceful: commits or aborts, leaves the group, exits 0
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert env.committed(group) == n
    expected = _expected(env, events)
    assert sum(sum(c.values()) for c in expected.values()) > n // 2
    _assert_each_once_in_key_order(env, events, expected)


def test_kill9_mid_stream_100k(route_env: RouteEnv, tmp_path: Path) -> None:
    _kill9_and_restart(route_env, 100_000, tmp_path)


def test_exactly_once_across_a_broker_restart(private_kafka: Any, stack_with: Any, tmp_path: Path) -> None:
    """A Kafka broker restart mid-stream: the router (a real process) rides through it and every
    filtered topic ends up with every expected event exactly once.

    Uses a private broker (its own state dir and ports; see conftest.py) so the shared stack keeps
    running; only the shared schema registry is used. Before the fix the router hung for good in
    send_offsets_to_transaction after the restart (librdkafka ignores that call's timeout when its
    cached group coordinator is stale, librdkafka #5456/#5511); now the call is bounded, the stuck
    producer is replaced and the uncommitted work is redone from the committed offsets.
    """
    shared = stack_with("registry")
    conns = shared.connections.model_copy(update={"kafka": private_kafka.connections().kafka})
    env = setup_env(conns, lambda p: f"{p}-{uuid.uuid4().hex[:8]}", tmp_path)
    n = 40_000
    write_filters(env, bench_filters_yaml(env.prefix, 10))
    group = env.prefix + "g"
    log = tmp_path / "router.log"
    events = env.produce(0, n // 8)
    # A producer stuck on the stale coordinator is replaced after this limit + 5 s, once per lane:
    # 2 x 25 s with the default 20 s, the bulk of this test's time. The bound is what is tested.
    proc = _spawn(env, group, log, "--txn-call-timeout-s", "5")
    # The router drains a backlog faster than this test can look, so the rest arrives in paced
    # chunks from a thread that keeps writing across the restart (its flush waits for the broker).
    writer = threading.Thread(target=_paced, args=(env, n // 8, n, events), daemon=True)
    try:
        env.wait_committed(group, 1_000, timeout=120)
        writer.start()
        time.sleep(1.0)
        assert writer.is_alive(), "the restart did not land mid-stream"
        private_kafka.down(["kafka"])
        private_kafka.up(["kafka"])
        writer.join(300)
        assert not writer.is_alive() and len(events) == n, f"only {len(events)}/{n} events written"
        try:
            env.wait_committed(group, n, timeout=180)
        except AssertionError:
            raise AssertionError(f"router log:\n{log.read_text()[-4000:]}") from None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert env.committed(group) == n
    _assert_each_once_in_key_order(env, events, _expected(env, events))


def _paced(
    env: RouteEnv, start: int, end: int, out: list[dict], hurry: threading.Event | None = None
) -> None:
    """Append events ``start..end-1`` in chunks of 1,000, at most ~10,000 per second; once ``hurry``
    is set, the rest at once."""
    for i in range(start, end, 1_000):
        if hurry is not None and hurry.is_set():
            out.extend(env.produce(i, end - i))
            return
        out.extend(env.produce(i, min(1_000, end - i)))
        time.sleep(0.1)


def _assert_each_once_in_key_order(
    env: RouteEnv, events: list[dict], expected: dict[str, Counter[str]]
) -> None:
    """Every filtered topic (read_committed, one pass) holds exactly its expected events, each once,
    and no record comes before an earlier event of the same key. A key lives in one partition, and
    the raw topic holds its events in the order written; the router's two lanes (two producers)
    must keep that order."""
    position = {e["eventHeader"]["uuid"]: (event_key(e), i) for i, e in enumerate(events)}
    out_of_order: dict[str, int] = {}
    for topic in env.filtered_topics:
        uuids = [decode_filtered(m.value())["eventHeader"]["uuid"] for m in read_topic(env.kafka(), topic)]
        actual = Counter(uuids)
        doubled = [u for u, k in actual.items() if k > 1]
        assert not doubled, f"{topic}: {len(doubled)} events delivered more than once"
        assert actual == expected[topic], f"{topic}: events lost or unexpected"
        last: dict[bytes, int] = {}
        inversions = 0
        for uuid_ in uuids:
            key, i = position[uuid_]
            inversions += last.get(key, -1) > i
            last[key] = i
        if inversions:
            out_of_order[topic] = inversions
    assert out_of_order == {}, f"records before an earlier event of their key: {out_of_order}"
