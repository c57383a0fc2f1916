"""What differs between PostgreSQL majors: failover slots (17+, both engines), refused clearly before 17.

The oracle is the server's own catalogue (``pg_replication_slots.failover``), not cdcrouter.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from capture_helpers import CaptureRun, drop_capture_objects, make_pipeline

from cdcrouter.capture import apply_domain, debezium
from cdcrouter.errors import CaptureError

pytestmark = pytest.mark.integration


def _slot_failover(run: CaptureRun) -> bool | None:
    with psycopg.connect(run.conns.postgres.conninfo()) as conn:
        row = conn.execute(
            "SELECT failover FROM pg_replication_slots WHERE slot_name = %s", (run.pipeline.replication.slot,)
        ).fetchone()
    assert row is not None, "capture created no slot"
    return row[0]


def _with_failover(run: CaptureRun, failover: bool) -> None:
    run.pipeline = make_pipeline(
        run.schema, run.topic.removeprefix("raw-"), replication={"failover": failover}
    )


@pytest.mark.pg_versions("18")
def test_failover_slot_is_created_and_follows_the_pipeline_on_17_plus(capture_run: CaptureRun) -> None:
    run = capture_run
    _with_failover(run, True)
    run.start()
    run.sql("INSERT INTO car_entities (id, vin, make, model) VALUES ('C1', 'V', 'M', 'X')")
    assert [e["sourceMetadata"]["operation"] for e in run.events(expect=1)] == ["INSERT"]
    assert _slot_failover(run) is True, "replication.failover: true made a slot without failover"
    run.stop()
    _with_failover(run, False)  # turned off for an existing slot: takes effect at the next start
    run.start()
    assert _slot_failover(run) is False
    run.sql("INSERT INTO car_entities (id, vin, make, model) VALUES ('C2', 'V', 'M', 'X')")
    assert [e["eventBody"]["entities"][0]["entityId"] for e in run.events(expect=2)] == ["C1", "C2"]


@pytest.mark.stack_services("postgres", "kafka", "registry", "connect")
@pytest.mark.pg_versions("18")
def test_debezium_connector_makes_a_failover_slot_on_17_plus(capture_run: CaptureRun) -> None:
    run = capture_run
    _with_failover(run, True)
    pipeline = run.pipeline
    slot = debezium.debezium_slot(pipeline)
    debezium.deploy(pipeline, run.conns)
    try:
        debezium.wait_running(run.conns, debezium.connector_name(pipeline))
        deadline, row = time.monotonic() + 60, None
        with psycopg.connect(run.conns.postgres.conninfo()) as conn:
            while row is None and time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT failover FROM pg_replication_slots WHERE slot_name = %s", (slot,)
                ).fetchone()
                time.sleep(0.2)
        assert row is not None, f"Connect created no slot {slot}"
        assert row[0] is True, "slot.failover did not reach Debezium"
    finally:
        debezium.undeploy(pipeline, run.conns)
        prefix = debezium.topic_prefix(pipeline)
        drop_capture_objects(
            run.conns, pipeline, None, [*debezium.table_topics(pipeline), f"__debezium-heartbeat.{prefix}"]
        )


@pytest.mark.pg_versions("15")
def test_failover_before_17_is_refused_with_a_hint(capture_run: CaptureRun) -> None:
    run = capture_run
    _with_failover(run, True)
    with pytest.raises(CaptureError) as info:
        run.start()
    run.engines.clear()  # its thread ended with the error just checked
    assert "needs PostgreSQL 17 or newer; this server is 15." in str(info.value)
    assert "replication.failover: false" in (info.value.hint or "")
    with pytest.raises(CaptureError, match="needs PostgreSQL 17 or newer"):  # `connector deploy` too
        debezium.prepare_source(run.pipeline, run.conns)


@pytest.mark.pg_versions("18")
def test_an_invalidated_slot_fails_at_once_and_resnapshot_recovers(
    stack: Any, private_pg: Any, unique_name: Any
) -> None:
    """max_slot_wal_keep_size invalidates a slot that falls behind (18 adds idle_replication_slot_timeout):
    the start must fail at once with the --resnapshot hint, not retry for minutes as if PostgreSQL
    were down. A private server: its settings are changed."""
    conns = stack.connections.model_copy(update={"postgres": private_pg.connections().postgres})
    name = unique_name("inv")
    schema = name.replace("-", "_")
    apply_domain(conns.postgres.conninfo(), schema)
    run = CaptureRun(conns, make_pipeline(schema, name, outbox=None), schema, stack.state_dir)
    try:
        run.start()
        run.sql("INSERT INTO car_entities (id, vin, make, model) VALUES ('C1', 'V', 'M', 'X')")
        assert len(run.events(expect=1)) == 1
        run.stop()
        with psycopg.connect(conns.postgres.conninfo(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
            conn.execute("SELECT pg_reload_conf()")
            for _ in range(4):  # WAL the stopped capture falls behind on, one segment at a time
                conn.execute("SELECT pg_logical_emit_message(false, 'filler', repeat('x', 2000000))")
                conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")
            status = conn.execute(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s",
                (run.pipeline.replication.slot,),
            ).fetchone()
        assert status == ("lost",), f"the server did not invalidate the slot: {status}"

        started = time.monotonic()
        with pytest.raises(CaptureError) as info:
            run.start(reconnect_timeout_s=120)
        run.engines.clear()
        assert time.monotonic() - started < 30, "an invalidated slot was retried like an outage"
        assert "was invalidated by PostgreSQL" in str(info.value) and "wal_removed" in str(info.value)
        assert "--resnapshot" in (info.value.hint or "")

        run.start(resnapshot=True)
        run.sql("INSERT INTO car_entities (id, vin, make, model) VALUES ('C2', 'V', 'M', 'X')")
        ops = [
            (e["sourceMetadata"]["operation"], e["eventBody"]["entities"][0]["entityId"])
            for e in run.events(expect=3)
        ]
        assert ops == [("INSERT", "C1"), ("SNAPSHOT", "C1"), ("INSERT", "C2")]
        run.stop()
    finally:
        run.engines.clear()
        drop_capture_objects(conns, run.pipeline, schema)
