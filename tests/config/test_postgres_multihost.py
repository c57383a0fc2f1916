"""libpq's multi-host form in ``connections.postgres``: what lets capture follow a promotion.

The oracle for the conninfo is libpq itself (``psycopg.conninfo.conninfo_to_dict`` parses what
capture passes to both psycopg and psycopg2)."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict
from pydantic import ValidationError

from cdcrouter.config.connections import PostgresSettings


def test_several_hosts_ask_for_the_primary_by_default() -> None:
    pg = PostgresSettings(host="db-a,db-b", port="5432,5433", password="s3cret")
    parsed = conninfo_to_dict(pg.conninfo())
    assert parsed["host"] == "db-a,db-b" and parsed["port"] == "5432,5433"
    assert parsed["target_session_attrs"] == "primary"
    assert pg.redacted() == "postgresql://cdcrouter@db-a:5432,db-b:5433/cdcrouter"
    assert "s3cret" not in pg.redacted()


def test_one_host_is_unchanged_and_the_attribute_can_be_set() -> None:
    assert "target_session_attrs" not in conninfo_to_dict(PostgresSettings().conninfo())
    pg = PostgresSettings(host="a,b", port=5432, target_session_attrs="read-write")
    assert conninfo_to_dict(pg.conninfo())["target_session_attrs"] == "read-write"
    assert pg.redacted() == "postgresql://cdcrouter@a:5432,b:5432/cdcrouter"  # one port for every host


def test_ports_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from cdcrouter.config import Connections

    monkeypatch.setenv("CDCROUTER_POSTGRES__HOST", "127.0.0.1,127.0.0.1")
    monkeypatch.setenv("CDCROUTER_POSTGRES__PORT", "55432,55433")
    pg = Connections().postgres
    assert conninfo_to_dict(pg.conninfo())["port"] == "55432,55433"
    monkeypatch.setenv("CDCROUTER_POSTGRES__PORT", "55432")
    assert Connections().postgres.port == 55432


@pytest.mark.parametrize("bad", ["5432,", "5432,x", "0", "70000", "5432,5433,99999"])
def test_bad_ports_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="port must be 1-65535"):
        PostgresSettings(port=bad)


def test_debezium_connector_configs_refuse_a_host_list() -> None:
    from cdcrouter.capture import debezium
    from cdcrouter.capture.domain import SAMPLE_TABLES
    from cdcrouter.capture.pipeline import pipeline_from_dict
    from cdcrouter.config import Connections
    from cdcrouter.errors import CaptureError

    pipeline = pipeline_from_dict({"schema": "public", "tables": dict(SAMPLE_TABLES)})
    conns = Connections(postgres=PostgresSettings(host="db-a,db-b", port="5432,5432"))
    for render in (debezium.render_connect_config, debezium.render_confluent_cloud_config):
        with pytest.raises(CaptureError, match="lists several hosts") as info:
            render(pipeline, conns)
        assert "capture run" in (info.value.hint or "")
    one = Connections(postgres=PostgresSettings(host="db-a", port=5432))
    assert debezium.render_connect_config(pipeline, one)["database.hostname"] == "db-a"
