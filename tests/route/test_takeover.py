"""A replica that takes over a killed replica's partitions aborts the dead one's open transaction at
once (route/takeover.py), instead of leaving read_committed readers of the filtered topics blocked
until the broker's transaction timeout; exactly once still holds.

Router ``a`` is stopped (SIGSTOP) with a transaction open, which the test sees on the broker: a
filtered partition whose last stable offset (read_committed) stays behind its high watermark while
``b`` has nothing left to commit. Then ``kill -9``. The routers run with a 120 s transaction timeout,
so only a fence can release the partitions sooner; the group notices the death after the session
timeout (15 s). Before this change the readers waited the whole timeout (60 s by default then).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from cdcrouter.route.events import encode_raw, event_key, make_event

from .routekit import RouteEnv
from .test_router import _actual, _expected

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("kafka", "registry")]

TIMEOUT_MS = 120_000  # far above the takeover: only a fence releases the partitions in time
SESSION_S = 15.0  # the router's session.timeout.ms


def _spawn(env: RouteEnv, instance: str, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "cdcrouter.cli.main", "run", "--filters", str(env.filters_path)]
    cmd += ["--raw-topic", env.raw, "--group", env.prefix + "g", "--instance-id", instance, "--no-reload"]
    cmd += ["--transaction-timeout-ms", str(TIMEOUT_MS)]
    proc_env = {
        **os.environ,
        "CDCROUTER_KAFKA__BOOTSTRAP_SERVERS": env.conns.kafka.bootstrap_servers,
        "CDCROUTER_REGISTRY__URL": env.conns.registry.url,
    }
    with log.open("ab") as out:
        return subprocess.Popen(cmd, env=proc_env, stdout=out, stderr=subprocess.STDOUT)


def _owners(env: RouteEnv) -> int:
    admin = AdminClient(env.kafka())
    group = env.prefix + "g"
    try:
        desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
    except Exception:
        return 0
    return sum(1 for m in desc.members if m.assignment and m.assignment.topic_partitions)


class Offsets:
    """High watermarks and last stable offsets of the filtered topics, as the broker reports them."""

    def __init__(self, env: RouteEnv) -> None:
        self.committed = Consumer(env.kafka(**{"group.id": "unused", "isolation.level": "read_committed"}))
        self.all = Consumer(env.kafka(**{"group.id": "unused", "isolation.level": "read_uncommitted"}))
        self.tps = [
            TopicPartition(t, p)
            for t in env.filtered_topics
            for p in self.all.list_topics(t, timeout=10).topics[t].partitions
        ]

    def ends(self, consumer: Consumer) -> dict[tuple[str, int], int]:
        return {
            (tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1]
            for tp in self.tps
        }

    def blocked(self) -> dict[tuple[str, int], int]:
        """Partitions whose last stable offset is behind the high watermark: an open transaction."""
        lso, hw = self.ends(self.committed), self.ends(self.all)
        return {tp: hw[tp] for tp in self.tps_keys() if lso[tp] < hw[tp]}

    def tps_keys(self) -> list[tuple[str, int]]:
        return [(tp.topic, tp.partition) for tp in self.tps]

    def close(self) -> None:
        self.committed.close()
        self.all.close()


@pytest.mark.parametrize("b_joins", ["before", "after"], ids=["peer-seen", "commit-tag-only"])
def test_a_replica_taking_over_aborts_the_dead_ones_transaction(
    env: RouteEnv, tmp_path: Path, b_joins: str
) -> None:
    """``peer-seen``: b runs beside a and saw it in the group. ``commit-tag-only``: b starts after
    a died under a new id (a Deployment's new pod), knowing a only from its commits' offset tags."""
    log = tmp_path / "routers.log"
    events = env.produce(0, 2_000)
    offsets = Offsets(env)
    a = _spawn(env, "a", log)
    b = _spawn(env, "b", log) if b_joins == "before" else None
    stop_writing = threading.Event()
    try:
        env.wait_committed(env.prefix + "g", 2_000, timeout=120)
        deadline = time.monotonic() + 90
        while b is not None and _owners(env) < 2:
            assert time.monotonic() < deadline, "both routers never owned partitions"
            time.sleep(0.5)
        # a steady stream, stopped with a inside a transaction (tried until the broker shows one)
        blocked: dict[tuple[str, int], int] = {}
        stopped_at = 0.0
        for attempt in range(20):
            stop_writing.clear()
            writer = threading.Thread(
                target=_stream, args=(env, len(events), events, stop_writing), daemon=True
            )
            writer.start()
            time.sleep(0.7 + 0.13 * attempt)
            a.send_signal(signal.SIGSTOP)
            stopped_at = time.monotonic()  # a's last heartbeat: its session times out from here
            stop_writing.set()
            writer.join(60)
            time.sleep(1.5)  # b (if any) commits what it routed
            # still blocked 2 s later: not a transaction of b's that was about to commit
            blocked = offsets.blocked()
            time.sleep(2.0)
            blocked = {tp: hw for tp, hw in offsets.blocked().items() if blocked.get(tp) == hw}
            if blocked:
                break
            a.send_signal(signal.SIGCONT)
        assert blocked, "router a was never caught with an open transaction"
        a.send_signal(signal.SIGKILL)
        a.wait(30)
        if b is None:
            b = _spawn(env, "b", log)
        # the dead transaction must end long before its 120 s timeout: the session timeout, the
        # rebalance and the fence (generous for a loaded 2-core machine)
        while offsets.blocked().keys() & blocked.keys():
            waited = time.monotonic() - stopped_at
            assert waited < SESSION_S + 45, f"still blocked after {waited:.0f} s:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        released = time.monotonic() - stopped_at
        print(f"released {released:.1f} s after a stopped (attempt {attempt + 1}, {len(blocked)} blocked)")
        env.wait_committed(env.prefix + "g", len(events), timeout=120)
        b.send_signal(signal.SIGTERM)
        assert b.wait(60) == 0, log.read_text()[-3000:]
    finally:
        stop_writing.set()
        offsets.close()
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
    said = log.read_text()
    assert "instance a" in said and "fenced cdcrouter-router." in said, said[-3000:]
    assert "Traceback" not in said
    # exactly once: every filtered topic holds what the oracle expects, each event once
    expected, actual = _expected(env, events), _actual(env)
    for topic in env.filtered_topics:
        assert actual[topic] == expected[topic], f"{topic}: events lost, doubled or unexpected"


def _stream(env: RouteEnv, start: int, out: list[dict], stop: threading.Event) -> None:
    """~5,000 events/s through one producer until ``stop``: the routers are never idle, so a
    transaction is open most of the time."""
    producer = Producer(
        env.kafka(**{"linger.ms": 5, "partitioner": "murmur2_random", "enable.idempotence": True})
    )
    i = start
    while not stop.is_set():
        for _ in range(50):
            event = make_event(i, 7)
            producer.produce(env.raw, encode_raw(event, env.raw_schema_id), event_key(event))
            out.append(event)
            i += 1
        producer.poll(0)
        time.sleep(0.01)
    assert producer.flush(60) == 0
