"""The transaction timeouts of the router and capture are configurable (CLI, pipeline.yaml) and a
value the broker refuses (above its ``transaction.max.timeout.ms``) stops them with a message that
names both values and says what to set. The oracle for "the value reached the producer" is the
broker refusing it.

Before: the router's and capture's producers had a fixed 60 s, so a killed router's open
transaction held read_committed readers of the filtered topics for 60-70 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cdcrouter.capture.kafka_limits import KafkaFatal
from cdcrouter.capture.pipeline import RawTopic, pipeline_from_dict
from cdcrouter.capture.sink import TransactionalSink
from cdcrouter.route.engine import RouterOptions
from cdcrouter.transactions import broker_max_timeout_ms

from .routekit import RouteEnv

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("kafka", "registry")]


def test_defaults_router_twenty_seconds_capture_sixty() -> None:
    assert RouterOptions(group_id="g").transaction_timeout_ms == 20_000
    p = pipeline_from_dict({"tables": {"t": {}}})
    assert (p.transactions.router_timeout_ms, p.transactions.capture_timeout_ms) == (20_000, 60_000)


def _run(env: RouteEnv, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cdcrouter.cli.main", "run", "--filters", str(env.filters_path)]
    cmd += ["--group", env.prefix + "g", "--instance-id", "t", "--no-reload", *args]
    proc_env = {
        **os.environ,
        "CDCROUTER_KAFKA__BOOTSTRAP_SERVERS": env.conns.kafka.bootstrap_servers,
        "CDCROUTER_REGISTRY__URL": env.conns.registry.url,
    }
    return subprocess.run(cmd, env=proc_env, capture_output=True, text=True, timeout=120, cwd=tmp_path)


def _refused(out: subprocess.CompletedProcess[str], limit: int, option: str) -> None:
    said = out.stdout + out.stderr
    assert out.returncode == 1, said
    assert "Traceback" not in said
    assert f"transaction.timeout.ms = {limit + 1} ms" in said, said
    assert f"transaction.max.timeout.ms ({limit} ms)" in said, said
    assert option in said and f"at most {limit}" in said, said


def test_a_router_timeout_above_the_broker_maximum_is_refused_clearly(env: RouteEnv, tmp_path: Path) -> None:
    limit = broker_max_timeout_ms(env.kafka())
    assert limit is not None
    out = _run(env, tmp_path, "--raw-topic", env.raw, "--transaction-timeout-ms", str(limit + 1))
    _refused(out, limit, "--transaction-timeout-ms")

    # the same through pipeline.yaml (the CLI flag, when given, wins over it)
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        f"raw_topic: {{name: {env.raw}}}\ntables: {{t: {{}}}}\n"
        f"transactions: {{router_timeout_ms: {limit + 1}}}\n"
    )
    _refused(_run(env, tmp_path, "--pipeline", str(pipeline)), limit, "router_timeout_ms")


def test_a_capture_timeout_above_the_broker_maximum_is_refused_clearly(env: RouteEnv) -> None:
    limit = broker_max_timeout_ms(env.kafka())
    assert limit is not None
    with pytest.raises(KafkaFatal) as caught:
        TransactionalSink(
            env.conns, RawTopic(name=env.raw), env.prefix + "slot", transaction_timeout_ms=limit + 1
        )
    assert f"transaction.max.timeout.ms ({limit} ms)" in caught.value.message
    assert "capture_timeout_ms" in (caught.value.hint or "")
    # and a value within it works
    sink = TransactionalSink(
        env.conns, RawTopic(name=env.raw), env.prefix + "slot", transaction_timeout_ms=5_000
    )
    sink.producer.flush(5)


def test_a_router_timeout_a_backlog_transaction_would_outlive_is_refused(
    env: RouteEnv, tmp_path: Path
) -> None:
    """Under a backlog a transaction fills for up to max_fill_ms (5 s) before its commit."""
    out = _run(env, tmp_path, "--raw-topic", env.raw, "--transaction-timeout-ms", "8000")
    said = out.stdout + out.stderr
    assert out.returncode == 1 and "Traceback" not in said, said
    assert "8000 ms is too short" in said and "above 10000" in said, said
