"""The Flink part of the local stack without starting it: layout, config, jars, clear errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from cdcrouter.errors import StackError
from cdcrouter.stack import flink, versions
from cdcrouter.stack.service import DEFAULT_PORTS, default_cache_dir


def test_config_binds_loopback_and_honours_ports(tmp_path: Path) -> None:
    ports = {**DEFAULT_PORTS, "flink-rest": 28181, "sql-gateway": 28191, "flink-rpc": 28123}
    conf = flink.flink_config(ports, flink.FlinkLayout(tmp_path))
    for key in ("jobmanager.bind-host", "taskmanager.bind-host", "rest.bind-address",
                "sql-gateway.endpoint.rest.bind-address"):  # fmt: skip
        assert conf[key] == "127.0.0.1", key
    assert (conf["rest.port"], conf["sql-gateway.endpoint.rest.port"], conf["jobmanager.rpc.port"]) == (
        28181,
        28191,
        28123,
    )
    assert str(tmp_path) in conf["env.log.dir"]
    # The whole cluster stays small: JM + TM process sizes plus the gateway heap.
    total = flink.JOBMANAGER_PROCESS_MB + flink.TASKMANAGER_PROCESS_MB + flink.GATEWAY_HEAP_MB
    assert total <= 1536


def test_missing_pyflink_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "pyflink" else real(n, *a))
    with pytest.raises(StackError) as info:
        flink.pyflink_home()
    assert "cdcrouter[flink]" in (info.value.hint or "")


def test_empty_jar_cache_without_fetch_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StackError) as info:
        flink.fetch_flink_jars(tmp_path, allow_fetch=False)
    assert "stack fetch" in (info.value.hint or "")


def test_prepare_layout_links_jars_and_writes_conf_outside_site_packages(tmp_path: Path) -> None:
    home = flink.pyflink_home()
    layout = flink.prepare_layout(tmp_path, default_cache_dir(), dict(DEFAULT_PORTS))
    names = {p.name for p in layout.lib.iterdir()}
    assert f"flink-dist-{versions.FLINK}.jar" in names
    assert f"flink-sql-connector-kafka-{versions.FLINK_KAFKA_CONNECTOR}.jar" in names
    assert f"flink-sql-avro-confluent-registry-{versions.FLINK_AVRO_CONFLUENT}.jar" in names
    assert [p.name for p in layout.opt.glob("flink-sql-gateway*.jar")] == [
        f"flink-sql-gateway-{versions.FLINK_SQL_GATEWAY}.jar"
    ]
    assert "rest.port: 8081" in (layout.conf / "config.yaml").read_text()
    assert not (home / "lib" / f"flink-sql-connector-kafka-{versions.FLINK_KAFKA_CONNECTOR}.jar").exists()
    # Idempotent: a second prepare leaves the same links.
    flink.prepare_layout(tmp_path, default_cache_dir(), dict(DEFAULT_PORTS))
    assert {p.name for p in layout.lib.iterdir()} == names


def test_pyflink_matches_pinned_flink_version() -> None:
    assert flink.pyflink_home().joinpath("lib", f"flink-dist-{versions.FLINK}.jar").is_file()


def test_config_overrides_replace_and_remove_default_keys(tmp_path: Path) -> None:
    """The fair benchmark sizes its private cluster with <state>/flink/config-overrides.json."""
    import json

    (tmp_path / "flink").mkdir()
    (tmp_path / "flink" / flink.OVERRIDES_FILE).write_text(
        json.dumps({"taskmanager.memory.process.size": None, "taskmanager.memory.flink.size": "4096m",
                    "parallelism.default": 2})
    )  # fmt: skip
    layout = flink.prepare_layout(tmp_path, default_cache_dir(), dict(DEFAULT_PORTS))
    conf = (layout.conf / "config.yaml").read_text().splitlines()
    assert "taskmanager.memory.flink.size: '4096m'" in conf and "parallelism.default: 2" in conf
    assert not any(line.startswith("taskmanager.memory.process.size") for line in conf)
    assert "rest.port: 8081" in conf  # the rest stays
