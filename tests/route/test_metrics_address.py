"""Metrics can be served on another address than 127.0.0.1, so a pod's metrics are scrapable.

127.0.0.2 is a loopback address too, but a server bound to 127.0.0.1 does not answer on it: it
stands in for the pod's own address without leaving the machine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cdcrouter.consumer import ConsumerApp
from cdcrouter.route.metrics import RouterMetrics

from .routekit import RouteEnv

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("kafka", "registry")]

OTHER = "127.0.0.2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def _scrape(host: str, port: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(f"http://{host}:{port}/metrics", timeout=5).text
        except httpx.TransportError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def test_the_default_address_is_loopback_only() -> None:
    port = _free_port()
    metrics = RouterMetrics()
    metrics.serve(port)
    try:
        assert "cdcrouter_route_consumed_total" in _scrape("127.0.0.1", port, 10)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://{OTHER}:{port}/metrics", timeout=5)
    finally:
        metrics.close()


def test_cdcrouter_run_serves_metrics_on_the_address_given(route_env: RouteEnv, tmp_path: Path) -> None:
    env = route_env
    port = _free_port()
    cmd = [sys.executable, "-m", "cdcrouter.cli.main", "run", "--filters", str(env.filters_path)]
    cmd += ["--raw-topic", env.raw, "--group", env.prefix + "g", "--instance-id", "m", "--no-reload"]
    cmd += ["--metrics-port", str(port), "--metrics-address", "0.0.0.0"]
    proc_env = {
        **os.environ,
        "CDCROUTER_KAFKA__BOOTSTRAP_SERVERS": env.conns.kafka.bootstrap_servers,
        "CDCROUTER_REGISTRY__URL": env.conns.registry.url,
    }
    log = tmp_path / "router.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=proc_env, stdout=out, stderr=subprocess.STDOUT)
    try:
        env.produce(0, 50)
        deadline = time.monotonic() + 60
        while "cdcrouter_route_consumed_total 50.0" not in (text := _scrape(OTHER, port, 60)):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()


def test_a_consumer_app_serves_metrics_on_the_address_given(route_env: RouteEnv) -> None:
    port = _free_port()
    app = ConsumerApp(
        "metrics-addr", route_env.conns, metrics_port=port, metrics_address="0.0.0.0", dlq=False
    )
    app.open(subscribe=False)
    try:
        assert "cdcrouter_consumer_processed" in _scrape(OTHER, port, 10)
    finally:
        app.close()
