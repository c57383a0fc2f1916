"""A PostgreSQL restart during capture loses nothing (and doubles nothing).

Runs against a private PostgreSQL (its own state dir and port, on 15 and on 18) so the shared
stack's server is never restarted; Kafka and the registry are the shared ones.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from capture_helpers import CaptureRun, drop_capture_objects, make_pipeline

from cdcrouter.capture import apply_domain

pytestmark = [pytest.mark.integration, pytest.mark.pg_versions()]  # on 15 and 18


def test_postgres_restart_during_capture_loses_nothing(stack: Any, private_pg: Any, unique_name: Any) -> None:
    conns = stack.connections.model_copy(update={"postgres": private_pg.connections().postgres})
    name = unique_name("pgr")
    schema = name.replace("-", "_")
    apply_domain(conns.postgres.conninfo(), schema)
    run = CaptureRun(conns, make_pipeline(schema, name, outbox=None), schema, stack.state_dir)
    dsn = conns.postgres.conninfo()
    try:
        run.start()
        with psycopg.connect(dsn, options=f"-c search_path={schema}", autocommit=True) as conn:
            for i in range(3000):  # 3,000 single-row transactions, then restart right away
                conn.execute(
                    "INSERT INTO car_entities (id, vin, make, model) VALUES (%s, 'V', 'M', 'X')", (f"A{i}",)
                )
        private_pg.down(["postgres"])
        private_pg.up(["postgres"])
        with psycopg.connect(dsn, options=f"-c search_path={schema}") as conn:
            conn.cursor().executemany(
                "INSERT INTO car_entities (id, vin, make, model) VALUES (%s, 'V', 'M', 'X')",
                [(f"B{i}",) for i in range(1000)],
            )
        events = run.events(expect=4000, timeout_s=120)
        ids = [e["eventBody"]["entities"][0]["entityId"] for e in events]
        assert len(ids) == 4000 and len(set(ids)) == 4000, f"{len(ids)} events, {len(set(ids))} distinct"
        assert ids == [f"A{i}" for i in range(3000)] + [f"B{i}" for i in range(1000)]
        assert run.engines[0][0].stats.reconnects >= 1, "the restart was not noticed"
        run.stop()
    finally:
        run.engines.clear()
        drop_capture_objects(conns, run.pipeline, schema)
