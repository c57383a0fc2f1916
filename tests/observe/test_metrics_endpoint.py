"""The shared endpoint (observe/endpoint.py) over real HTTP: /metrics, /healthz, /readyz and the
readiness a process reports through its Heartbeat."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from cdcrouter.observe.endpoint import Heartbeat, MetricsServer


@pytest.fixture
def served() -> Iterator[tuple[MetricsServer, Heartbeat, Counter]]:
    registry = CollectorRegistry()
    counter = Counter("cdcr_test_things", "things", registry=registry)
    beat = Heartbeat(stall_s=0.5, reason="starting")
    server = MetricsServer(0, "127.0.0.1", registry, [("engine", beat)])
    try:
        yield server, beat, counter
    finally:
        server.close()


def _get(server: MetricsServer, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{server.port}{path}", timeout=5)


def test_metrics_health_and_readiness(served: tuple[MetricsServer, Heartbeat, Counter]) -> None:
    server, beat, counter = served
    counter.inc(3)
    assert "cdcr_test_things_total 3.0" in _get(server, "/metrics").text
    assert _get(server, "/healthz").status_code == 200

    starting = _get(server, "/readyz")
    assert (starting.status_code, starting.text) == (503, "engine: not ready: starting\n")
    beat.set(True, "assigned 2 partition(s)")
    ready = _get(server, "/readyz")
    assert (ready.status_code, ready.text) == (200, "engine: ready: assigned 2 partition(s)\n")


def test_an_unknown_path_is_404_so_a_misspelt_probe_fails(
    served: tuple[MetricsServer, Heartbeat, Counter],
) -> None:
    server, beat, _ = served
    beat.set(True, "streaming")
    for path in ("/healthy", "/ready", "/readyz/", "/metric"):
        assert _get(server, path).status_code == 404, path
    assert _get(server, "/").status_code == 200  # prometheus_client's own server answers / too


def test_a_loop_that_stops_beating_is_not_ready_but_alive(
    served: tuple[MetricsServer, Heartbeat, Counter],
) -> None:
    server, beat, _ = served
    beat.set(True, "streaming")
    time.sleep(0.8)  # > stall_s without a beat
    stalled = _get(server, "/readyz")
    assert stalled.status_code == 503 and "stalled" in stalled.text
    assert _get(server, "/healthz").status_code == 200
    beat.beat()
    assert _get(server, "/readyz").status_code == 200


def test_progress_counts_as_a_beat() -> None:
    """A loop busy inside one huge transaction does not beat, but its counter moves: not stalled."""
    done = [0]
    beat = Heartbeat(stall_s=0.3, progress=lambda: done[0])
    beat.set(True, "streaming")
    time.sleep(0.5)
    done[0] += 1
    assert beat() == (True, "streaming")
    time.sleep(0.5)  # no beat, no progress
    ready, reason = beat()
    assert not ready and "stalled" in reason


def test_every_check_must_pass_and_a_failing_check_is_not_ready(
    served: tuple[MetricsServer, Heartbeat, Counter],
) -> None:
    server, beat, _ = served
    beat.set(True, "ok")
    other = Heartbeat(reason="not assigned")
    server.add_check("second app", other)
    assert _get(server, "/readyz").status_code == 503
    other.set(True, "assigned")
    assert _get(server, "/readyz").status_code == 200

    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    server.add_check("broken", broken)
    answer = _get(server, "/readyz")
    assert answer.status_code == 503 and "check failed" in answer.text
    server.remove_check("broken")
    assert _get(server, "/readyz").status_code == 200


def test_a_busy_port_raises_oserror_for_the_caller_to_report() -> None:
    first = MetricsServer(0)
    try:
        with pytest.raises(OSError):
            MetricsServer(first.port)
    finally:
        first.close()
