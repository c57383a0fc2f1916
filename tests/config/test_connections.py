from __future__ import annotations

import json

import pytest

from cdcrouter.config import load_connections
from cdcrouter.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CDCROUTER_"):
            monkeypatch.delenv(name)


def test_precedence_env_over_file_over_stack(tmp_path, monkeypatch):
    state = tmp_path / "state"
    (state / "secrets").mkdir(parents=True)
    (state / "endpoints.json").write_text(
        json.dumps({"kafka": {"bootstrap_servers": "127.0.0.1:1111"}, "postgres": {"port": 5999}})
    )
    (state / "secrets" / "postgres-password").write_text("pw-from-secret-file\n")
    cfg = tmp_path / "cdcrouter.yaml"
    cfg.write_text(
        "connections:\n  kafka:\n    bootstrap_servers: broker:9092\n    sasl_password: ${MY_SECRET}\n"
        "  registry:\n    url: https://sr.example\n"
    )
    monkeypatch.setenv("MY_SECRET", "s3cr3t")
    monkeypatch.setenv("CDCROUTER_REGISTRY__URL", "http://from-env")
    conns = load_connections(cfg, state)
    assert conns.kafka.bootstrap_servers == "broker:9092"
    assert conns.kafka.to_librdkafka()["sasl.password"] == "s3cr3t"
    assert "s3cr3t" not in repr(conns)
    assert conns.registry.url == "http://from-env"
    assert conns.postgres.port == 5999
    assert "password=pw-from-secret-file" in conns.postgres.conninfo()
    assert "pw-from-secret-file" not in conns.postgres.redacted()


def test_missing_env_reference_is_a_clear_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("connections:\n  kafka:\n    sasl_password: ${NOPE_NOT_SET}\n")
    with pytest.raises(ConfigError, match="NOPE_NOT_SET"):
        load_connections(cfg, tmp_path)


def test_unknown_key_is_rejected(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("connections:\n  kafka:\n    bootstrap: x\n")
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap"):
        load_connections(cfg, tmp_path)


def test_explicit_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_connections(tmp_path / "nope.yaml", tmp_path)
