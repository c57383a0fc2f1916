"""``cdcrouter dr standby up|status|promote|down`` on a private PostgreSQL (its own state dir and
port; the shared server is never touched). The oracle is the servers' own catalogues."""

from __future__ import annotations

import json
import socket
from typing import Any

import psycopg
import pytest

from cdcrouter.cli.main import main

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one(dsn: str, query: str) -> Any:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute(query).fetchone()
    return row[0] if row else None


def test_standby_up_streams_synchronously_promotes_and_down_undoes_the_primary_settings(
    private_pg: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--state-dir", str(private_pg.state_dir)]
    port = str(_free_port())
    primary = private_pg.connections().postgres
    standby = primary.model_copy(update={"port": int(port)})
    try:
        assert main(["dr", "standby", "up", *where, "--port", port]) == 0
        out = capsys.readouterr().out
        assert f"CDCROUTER_POSTGRES__PORT={primary.port},{port}" in out, out
        state = _one(
            primary.conninfo(),
            "SELECT state || '/' || sync_state FROM pg_stat_replication "
            "WHERE application_name = 'postgres-standby'",
        )
        assert state == "streaming/sync"  # a commit the primary acknowledges is on the standby
        assert _one(standby.conninfo(), "SELECT pg_is_in_recovery()") is True
        # a commit on the primary is readable on the standby
        with psycopg.connect(primary.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS standby_probe (v int)")
            conn.execute("INSERT INTO standby_probe VALUES (42)")
        assert _one(standby.conninfo(), "SELECT max(v) FROM standby_probe") == 42

        assert main(["dr", "standby", "status", *where, "--format", "json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["running"] and doc["in_recovery"] is True and doc["port"] == int(port)

        assert main(["dr", "standby", "promote", *where]) == 0
        assert _one(standby.conninfo(), "SELECT pg_is_in_recovery()") is False
        with psycopg.connect(standby.conninfo(), autocommit=True) as conn:  # writable now
            conn.execute("INSERT INTO standby_probe VALUES (43)")
    finally:
        assert main(["dr", "standby", "down", *where, "--purge"]) == 0
    # the primary no longer waits for a standby that is gone, nor keeps WAL for it
    assert _one(primary.conninfo(), "SHOW synchronous_standby_names") == ""
    assert (
        _one(primary.conninfo(), "SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'physical'")
        == 0
    )
    with psycopg.connect(primary.conninfo(), autocommit=True) as conn:  # does not block
        conn.execute("SET statement_timeout = '10s'")
        conn.execute("INSERT INTO standby_probe VALUES (44)")
    assert not (private_pg.state_dir / "postgres-standby").exists()


def test_promote_without_a_standby_is_a_clear_error(
    private_pg: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["dr", "standby", "promote", "--state-dir", str(private_pg.state_dir), "--port", str(_free_port())]
    )
    err = capsys.readouterr().err
    assert code == 1 and "cannot reach the standby" in err and "hint:" in err and "Traceback" not in err
