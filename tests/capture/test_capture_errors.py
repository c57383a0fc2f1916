"""Capture refuses what it cannot do correctly, with a clear error and a hint (no traceback)."""

from __future__ import annotations

import contextlib
import select
import threading
import time
from pathlib import Path

import psycopg
import psycopg2
import pytest
from capture_helpers import CaptureRun, make_pipeline
from psycopg2.extras import LogicalReplicationConnection
from pydantic import SecretStr

from cdcrouter.capture import CaptureEngine
from cdcrouter.cli.main import main
from cdcrouter.errors import CaptureError
from cdcrouter_testing.slots import wait_slot_active

pytestmark = pytest.mark.integration


def _engine_error(run: CaptureRun) -> CaptureError:
    with pytest.raises(CaptureError) as info:
        CaptureEngine(run.pipeline, run.conns).run(duration_s=5)
    assert info.value.hint
    return info.value


def test_table_without_primary_key(capture_run: CaptureRun) -> None:
    capture_run.sql("CREATE TABLE audit_log (at timestamptz, what text)")
    capture_run.pipeline = make_pipeline(capture_run.schema, "nopk", tables={"audit_log": {}}, outbox=None)
    err = _engine_error(capture_run)
    assert "audit_log has no primary key" in err.message
    assert "tables.audit_log.entity_id" in (err.hint or "")


def test_unsupported_column_type(capture_run: CaptureRun) -> None:
    capture_run.sql("CREATE TABLE garages (id text PRIMARY KEY, location point)")
    capture_run.pipeline = make_pipeline(capture_run.schema, "badtype", tables={"garages": {}}, outbox=None)
    err = _engine_error(capture_run)
    assert "garages.location has type point" in err.message
    assert "exclude_columns" in (err.hint or "")


def test_dropped_slot_is_reported_on_restart(capture_run: CaptureRun) -> None:
    from cdcrouter.capture import source

    run = capture_run
    run.start()
    run.stop()
    conn = source.connect_sql(run.conns.postgres)
    source.drop_slot(conn, run.pipeline.replication.slot)
    conn.close()
    err = _engine_error(run)
    assert f"replication slot {run.pipeline.replication.slot} is gone" in err.message
    assert "--resnapshot" in (err.hint or "")


def test_wrong_credentials_through_the_cli(
    capture_run: CaptureRun,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(f"schema: {capture_run.schema}\ntables:\n  car_entities: {{}}\n")
    monkeypatch.setenv("CDCROUTER_STATE_DIR", str(capture_run.state_dir))
    monkeypatch.setenv("CDCROUTER_POSTGRES__PASSWORD", "certainly-not-the-password")
    code = main(["capture", "run", "--pipeline", str(pipeline), "--duration", "5"])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: cannot connect to PostgreSQL" in err
    assert "password authentication failed" in err
    assert "hint: check the PostgreSQL user and password" in err
    assert "Traceback" not in err


class _SlotHolder:
    """Clients that take ``slot`` as soon as its walsender is ended (processes retrying with no
    back-off), until the slot is gone or the test stops them."""

    def __init__(self, dsn: str, slot: str, clients: int = 4) -> None:
        self.dsn, self.slot = dsn, slot
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._hold, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _hold(self) -> None:
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg2.connect(self.dsn, connection_factory=LogicalReplicationConnection)
                cur = conn.cursor()
                cur.start_replication(self.slot, decode=True)
                while not self.stop.is_set():
                    cur.read_message()
                    select.select([cur], [], [], 0.05)
            except psycopg2.Error as exc:
                if "does not exist" in str(exc):
                    break
                if "is active for PID" not in str(exc) and conn is not None:
                    conn.close()  # ended by the server: connect again
                time.sleep(0.001)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def _holder(run: CaptureRun, slot: str) -> tuple[_SlotHolder, int]:
    """A slot (test_decoding) held by a _SlotHolder, and the walsender's PID."""
    with psycopg.connect(run.conns.postgres.conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (slot,))
    holder = _SlotHolder(run.conns.postgres.conninfo(), slot)
    wait_slot_active(run.conns.postgres.conninfo(), slot, timeout_s=30, who="the test's client")
    with psycopg.connect(run.conns.postgres.conninfo()) as conn:
        row = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        return holder, row.fetchone()[0]  # type: ignore[index]


def test_dropping_a_slot_a_client_keeps_taking_back_succeeds_or_says_who(capture_run: CaptureRun) -> None:
    """drop_slot ended the walsender once, then waited 5 s for the slot to be free: a client that
    reconnected at once kept it, and drop_slot returned as if done, the slot still there."""
    from cdcrouter.capture import source

    run = capture_run
    slot = f"{run.pipeline.replication.slot}_held"
    holder, _pid = _holder(run, slot)
    conn = source.connect_sql(run.conns.postgres)
    try:
        source.drop_slot(conn, slot)
    except CaptureError as exc:  # a clear refusal is the other correct outcome
        assert f"cannot drop replication slot {slot}: PID " in exc.message
        assert "pg_terminate_backend(" in (exc.hint or "")
    else:
        gone = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
        assert gone is None, "drop_slot returned but the slot is still there"
    finally:
        holder.close()
        with contextlib.suppress(psycopg.Error):
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        conn.close()


def test_a_slot_this_user_may_not_free_is_an_error_naming_its_holder(capture_run: CaptureRun) -> None:
    """A user without the right to end the holder's walsender got psycopg's InsufficientPrivilege
    out of drop_slot: now a CaptureError naming the PID and how to end it."""
    from cdcrouter.capture import source

    run = capture_run
    slot = f"{run.pipeline.replication.slot}_held"
    role = f"{run.schema}_repl"
    holder, pid = _holder(run, slot)
    admin = psycopg.connect(run.conns.postgres.conninfo(), autocommit=True)
    admin.execute(f"CREATE ROLE {role} LOGIN REPLICATION PASSWORD 'x'")
    try:
        pg = run.conns.postgres.model_copy(update={"user": role, "password": SecretStr("x")})
        conn = source.connect_sql(pg)
        with pytest.raises(CaptureError) as info:
            source.drop_slot(conn, slot)
        conn.close()
        assert f"cannot drop replication slot {slot}: PID {pid} (user {run.conns.postgres.user}" in (
            info.value.message
        )
        assert "may not end it" in info.value.message
        assert f"SELECT pg_terminate_backend({pid})" in (info.value.hint or "")
    finally:
        holder.close()
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        with contextlib.suppress(psycopg.Error):
            admin.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        admin.close()
