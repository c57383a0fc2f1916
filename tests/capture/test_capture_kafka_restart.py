"""A Kafka broker restart during capture loses nothing and doubles nothing. Either the producer
rides it out (librdkafka retries the commit until the broker is back) or the engine replaces the
producer and resumes from the position Kafka really committed.

Uses a private broker (its own state dir and ports) so the shared stack's Kafka keeps running.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from capture_helpers import CaptureRun, drop_capture_objects, make_pipeline

from cdcrouter.capture import apply_domain

pytestmark = pytest.mark.integration


def test_kafka_restart_during_capture_loses_nothing(
    stack_with: Any, private_kafka: Any, unique_name: Any
) -> None:
    stack = stack_with("postgres", "registry")  # the shared broker is not needed
    conns = stack.connections.model_copy(update={"kafka": private_kafka.connections().kafka})
    name = unique_name("kr")
    schema = name.replace("-", "_")
    apply_domain(conns.postgres.conninfo(), schema)
    run = CaptureRun(conns, make_pipeline(schema, name, outbox=None), schema, stack.state_dir)
    dsn = conns.postgres.conninfo()

    def insert(prefix: str, n: int) -> None:
        with psycopg.connect(dsn, options=f"-c search_path={schema}", autocommit=True) as conn:
            for i in range(n):
                conn.execute(
                    "INSERT INTO car_entities (id, vin, make, model) VALUES (%s, 'V', 'M', 'X')",
                    (f"{prefix}{i}",),
                )

    try:
        run.start()
        insert("A", 200)
        private_kafka.down(["kafka"])
        insert("B", 200)  # committed in PostgreSQL while Kafka is down
        private_kafka.up(["kafka"])
        insert("C", 200)
        events = run.events(expect=600, timeout_s=180)
        ids = [e["eventBody"]["entities"][0]["entityId"] for e in events]
        assert len(ids) == 600 and len(set(ids)) == 600, f"{len(ids)} events, {len(set(ids))} distinct"
        assert ids == [f"{p}{i}" for p in "ABC" for i in range(200)]
        run.stop()
    finally:
        run.engines.clear()
        drop_capture_objects(conns, run.pipeline, schema)
