"""The second Kafka region's stack: its own state dir, ports and services (no processes started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdcrouter.cli.main import main
from cdcrouter.stack.manager import Stack


def test_region_b_has_its_own_state_dir_ports_and_only_kafka(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CDCROUTER_STACK_PORT_KAFKA", raising=False)
    monkeypatch.setenv("CDCROUTER_STACK_B_PORT_KAFKA_CONTROLLER", "29093")
    a, b = Stack(tmp_path), Stack(tmp_path, region="b")
    assert b.state_dir == (tmp_path / "region-b").absolute()
    assert list(b.services) == ["kafka"]
    assert (a.ctx.port("kafka"), b.ctx.port("kafka")) == (9092, 19092)
    assert b.ctx.port("kafka-controller") == 29093  # the region's own variable
    assert a.ctx.port("kafka-controller") == 9093
    assert {"postgres", "kafka", "registry", "connect"} <= set(a.services)


def test_an_unknown_region_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stack", "status", "--state-dir", str(tmp_path), "--region", "c"]) == 2
    assert "unknown region 'c'; choose from a, b" in capsys.readouterr().err
