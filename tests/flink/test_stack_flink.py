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


def test_the_cluster_runs_from_the_cache_not_from_the_venv(tmp_path: Path) -> None:
    """Deleting the venv that started Flink broke it: lib/ linked into its site-packages."""
    cache = default_cache_dir()
    layout = flink.prepare_layout(tmp_path, cache, dict(DEFAULT_PORTS))
    site = flink.pyflink_home().resolve()
    links = [*layout.lib.iterdir(), *layout.opt.iterdir()]
    assert links and all(p.is_symlink() and p.exists() for p in links)
    assert not [p for p in links if p.resolve().is_relative_to(site)], "links into the venv's PyFlink"
    assert all(p.resolve().is_relative_to(cache.resolve()) for p in links)
    home = flink.stable_home(cache)
    dist = f"flink-dist-{versions.FLINK}.jar"
    assert (home / "lib" / dist).stat().st_size == (site / "lib" / dist).stat().st_size
    assert (home / "bin" / "jobmanager.sh").is_file() and not (home / "bin").is_relative_to(site)


def test_flink_starts_a_jvm_from_the_cached_copy(tmp_path: Path) -> None:
    """The copied bin/ finds its jars through our layout alone (flink --version starts the client JVM)."""
    import subprocess

    from cdcrouter.stack.service import StackContext

    ctx = StackContext(state_dir=tmp_path)
    flink.prepare_layout(tmp_path, ctx.cache_dir, dict(DEFAULT_PORTS))
    env = flink._flink_env(ctx)
    out = subprocess.run(
        ["bash", str(flink.stable_home(ctx.cache_dir) / "bin" / "flink"), "--version"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0 and f"Version: {versions.FLINK}" in out.stdout, out.stdout + out.stderr


def test_a_broken_lib_makes_a_running_flink_unhealthy(tmp_path: Path) -> None:
    """A lib link whose target is gone (the venv deleted) is unhealthy even while the REST API still
    answers; the running cluster of the shared stack answers REST for this check."""
    from cdcrouter.stack.service import StackContext

    ctx = StackContext(state_dir=tmp_path)
    if flink._get_json(f"http://127.0.0.1:{ctx.port('flink-rest')}/overview") is None:
        pytest.skip("no Flink JobManager answers on the stack's port (cdcrouter stack up --only flink)")
    layout = flink.prepare_layout(tmp_path, ctx.cache_dir, dict(DEFAULT_PORTS))
    assert flink.lib_problems(layout) == []
    assert flink.FlinkJobManager().ready(ctx)
    gone = tmp_path / "deleted-venv" / f"flink-dist-{versions.FLINK}.jar"
    dist = layout.lib / f"flink-dist-{versions.FLINK}.jar"
    dist.unlink()
    dist.symlink_to(gone)
    assert [p for p in flink.lib_problems(layout) if "deleted-venv" in p]
    assert not flink.FlinkJobManager().ready(ctx)
    flink.prepare_layout(tmp_path, ctx.cache_dir, dict(DEFAULT_PORTS))  # a (re)start repairs it
    assert flink.lib_problems(layout) == [] and flink.FlinkJobManager().ready(ctx)
