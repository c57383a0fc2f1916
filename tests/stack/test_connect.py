"""Kafka Connect with Debezium's PostgreSQL connector and the Avro converter, for real."""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("postgres", "connect")]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def test_debezium_connector_runs_and_writes_avro(stack, unique_name):
    conns = stack.connections
    name = unique_name("dbz")
    table = unique_name("orders").replace("-", "_")
    slot = name.replace("-", "_")
    prefix = slot  # becomes the Avro namespace: letters, digits and underscores only
    with psycopg.connect(stack.pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE public.{table} (id int PRIMARY KEY, amount numeric(10,2), note text)")
        conn.execute(f"INSERT INTO public.{table} VALUES (1, 10.50, 'first')")
    config = {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": "1",
        "plugin.name": "pgoutput",
        "database.hostname": conns.postgres.host,
        "database.port": str(conns.postgres.port),
        "database.user": conns.postgres.user,
        "database.password": conns.postgres.password.get_secret_value(),
        "database.dbname": conns.postgres.dbname,
        "topic.prefix": prefix,
        "table.include.list": f"public.{table}",
        "slot.name": slot,
        "slot.drop.on.stop": "true",
        "publication.name": slot,
        "publication.autocreate.mode": "filtered",
        "snapshot.mode": "initial",
        "decimal.handling.mode": "string",
        "schema.name.adjustment.mode": "avro",
        "topic.creation.default.replication.factor": "1",
        "topic.creation.default.partitions": "1",
    }
    client = httpx.Client(base_url=stack.connect_url, timeout=30)
    resp = client.put(f"/connectors/{name}/config", json=config)
    assert resp.status_code in (200, 201), resp.text
    try:

        def running():
            st = client.get(f"/connectors/{name}/status")
            if st.status_code != 200:
                return None
            body = st.json()
            tasks = body.get("tasks", [])
            if any(t["state"] == "FAILED" for t in tasks):
                raise AssertionError(f"task failed: {tasks[0].get('trace', '')[:2000]}")
            ok = body["connector"]["state"] == "RUNNING" and tasks and tasks[0]["state"] == "RUNNING"
            return body if ok else None

        _wait(running, 90, f"connector {name} and its task RUNNING")

        topic = f"{prefix}.public.{table}"
        consumer = Consumer(
            stack.kafka_conf(
                **{
                    "group.id": unique_name("g"),
                    "auto.offset.reset": "earliest",
                    "isolation.level": "read_committed",
                }
            )
        )
        deser = AvroDeserializer(SchemaRegistryClient({"url": stack.registry_url, "timeout": 30}))
        consumer.subscribe([topic])
        rows = []
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(rows) < 2:
                msg = consumer.poll(0.5)
                if msg is None:
                    running()  # raises with the task's trace if it failed meanwhile
                    continue
                if msg.error():
                    continue
                assert msg.value()[0] == 0  # Confluent wire format from the Avro converter
                value = deser(msg.value(), SerializationContext(topic, MessageField.VALUE))
                rows.append(value)
                if len(rows) == 1:
                    # Insert only once the snapshot row is out, so streaming has surely begun:
                    # in one clean-clone run an insert made right after the task reported
                    # RUNNING never arrived (no error in Connect's or PostgreSQL's logs).
                    with psycopg.connect(stack.pg_dsn, autocommit=True) as conn:
                        conn.execute(f"INSERT INTO public.{table} VALUES (2, 20.25, 'second')")
        finally:
            consumer.close()
        assert [(r["op"], r["after"]["id"], r["after"]["amount"]) for r in rows] == [
            ("r", 1, "10.50"),
            ("c", 2, "20.25"),
        ]
    finally:
        client.delete(f"/connectors/{name}")
        with psycopg.connect(stack.pg_dsn, autocommit=True) as conn:
            # the connector drops its slot on stop; make sure, so no WAL is retained by a test
            _wait(
                lambda: (
                    not conn.execute(
                        "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s AND active", (slot,)
                    ).fetchone()
                ),
                30,
                f"slot {slot} released",
            )
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                (slot,),
            )
            conn.execute(f"DROP PUBLICATION IF EXISTS {slot}")
            conn.execute(f"DROP TABLE IF EXISTS public.{table}")
