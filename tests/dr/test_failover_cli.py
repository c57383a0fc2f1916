"""``cdcrouter dr failover|failback|start|stop|ps`` on real processes: a refusal stops nothing, a
forced failover stops each recorded process and starts the same command line in the other region
(its ``CDCROUTER_KAFKA__BOOTSTRAP_SERVERS`` is that region's), and failback brings it home."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from cdcrouter.cli.main import main
from cdcrouter.dr.processes import ProcessRegistry

REGION_B = "127.0.0.1:1"  # never contacted: no mirror, and the failover does not read region b's Kafka


@pytest.fixture
def dr_env(tmp_path: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CDCROUTER_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("CDCROUTER_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("CDCROUTER_REGION_B__KAFKA__BOOTSTRAP_SERVERS", REGION_B)
    monkeypatch.delenv("CDCROUTER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _env_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_failover_moves_recorded_processes_and_failback_brings_them_home(
    dr_env: Path, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = ProcessRegistry(dr_env / "dr" / "processes")
    assert main(["dr", "start", "app", "--role", "consumer", "--exec", "--", "sleep", "120"]) == 0
    first = reg.get("app")
    assert first is not None and first.alive() and first.argv == ["sleep", "120"]
    assert _env_of(first.pid)["CDCROUTER_KAFKA__BOOTSTRAP_SERVERS"] == kafka_bootstrap
    try:
        # no mirror is known: refused before anything is stopped
        assert main(["dr", "failover", "--to", "b"]) == 1
        assert "no mirror a->b is known" in capsys.readouterr().err
        assert first.alive()
        assert main(["dr", "failover", "--to", "a"]) == 2  # already there: a usage error

        assert main(["dr", "failover", "--to", "b", "--force", "--grace", "5"]) == 0
        out = capsys.readouterr().out
        assert "stop consumer app" in out and "start consumer app in b" in out
        assert not first.alive()
        moved = reg.get("app")
        assert moved is not None and moved.region == "b" and moved.pid != first.pid and moved.alive()
        assert _env_of(moved.pid)["CDCROUTER_KAFKA__BOOTSTRAP_SERVERS"] == REGION_B
        assert json.loads((dr_env / "dr" / "active-region.json").read_text())["region"] == "b"

        assert main(["dr", "ps"]) == 0
        assert "active region: b" in capsys.readouterr().out

        assert main(["dr", "failback", "--force", "--grace", "5"]) == 0
        home = reg.get("app")
        assert home is not None and home.region == "a" and home.alive() and not moved.alive()
        assert _env_of(home.pid)["CDCROUTER_KAFKA__BOOTSTRAP_SERVERS"] == kafka_bootstrap
    finally:
        assert main(["dr", "stop"]) == 0
    deadline = time.monotonic() + 10
    while any(m.alive() for m in reg.all()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert reg.all() == [] and "CDCROUTER_STATE_DIR" in os.environ
