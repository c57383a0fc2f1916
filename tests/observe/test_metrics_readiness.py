"""Capture's /readyz follows its replication connection for real: a PostgreSQL of the test's own goes
down and comes back; meanwhile the process stays alive (/healthz) and /metrics still answers."""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from cdcrouter.capture import CaptureEngine, apply_domain, pipeline_from_dict, source
from cdcrouter.capture.domain import SAMPLE_TABLES
from cdcrouter.topics import delete_topics

pytestmark = [pytest.mark.integration]


def _get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)


def _wait(what: str, ok: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)


def test_capture_is_not_ready_while_postgres_is_down(stack: Any, private_pg: Any, unique_name: Any) -> None:
    conns = stack.connections.model_copy(update={"postgres": private_pg.connections().postgres})
    name = unique_name("rdy")
    schema = name.replace("-", "_")
    apply_domain(conns.postgres.conninfo(), schema)
    pipeline = pipeline_from_dict(
        {
            "schema": schema,
            "raw_topic": {"name": f"raw-{name}", "partitions": 1},
            "replication": {"slot": f"s_{schema}"[:63], "publication": f"p_{schema}"[:63]},
            "batching": {"max_ms": 20},
            "tables": copy.deepcopy(SAMPLE_TABLES),
        }
    )
    engine = CaptureEngine(pipeline, conns, progress=lambda _m: None)
    engine.metrics.serve(0)
    port = engine.metrics.port
    assert port is not None
    stop, errors = threading.Event(), []

    def run() -> None:
        try:
            engine.run(stop)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        _wait("capture streams", lambda: engine.ready.is_set() or bool(errors))
        assert not errors, errors
        assert _get(port, "/readyz").status_code == 200

        private_pg.down(["postgres"])
        _wait("/readyz 503 while PostgreSQL is down", lambda: _get(port, "/readyz").status_code == 503)
        assert "not connected" in _get(port, "/readyz").text
        assert _get(port, "/healthz").status_code == 200  # alive: an orchestrator must not kill it
        scrape = _get(port, "/metrics")  # the slot cannot be read: its gauges are left out, no error
        assert scrape.status_code == 200 and "cdcrouter_capture_changes_total" in scrape.text
        assert "cdcrouter_capture_slot_wal_status" not in scrape.text

        private_pg.up(["postgres"])
        _wait("/readyz 200 once capture streams again", lambda: _get(port, "/readyz").status_code == 200, 120)
        assert not errors, errors
        assert 'cdcrouter_capture_slot_wal_status{wal_status="reserved"} 1.0' in _get(port, "/metrics").text
        assert engine.stats.reconnects >= 1
    finally:
        stop.set()
        thread.join(60)
        engine.metrics.close()
        with contextlib.suppress(Exception):
            conn = source.connect_sql(conns.postgres)
            source.drop_slot(conn, pipeline.replication.slot)
            conn.close()
        raw = pipeline.raw_topic
        delete_topics(conns, [raw.name, raw.offsets_topic, raw.dlq_topic])
