"""``cdcrouter dr drill --scenario router-kill`` on the real stack: kill -9 of one of two routers
while 50 changes/s are written; every row PostgreSQL committed must be in the filtered topics once
and in the SDK consumer's view once. The oracle is the drill table as PostgreSQL has it."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from confluent_kafka.admin import AdminClient

from cdcrouter.dr.pipeline import DrillPipeline
from cdcrouter.dr.report import DrillReport
from cdcrouter.dr.scenarios.router import RouterKill


def test_router_kill_loses_nothing(stack, drill: Callable[..., DrillReport]) -> None:
    conns = stack.connections
    report = drill(RouterKill(restart=True), min_acked=150)
    name = report.run
    v = report.verdict
    assert v is not None and report.view is not None and report.recovery is not None
    assert v.committed == report.acked + v.in_doubt_committed  # the oracle saw every acknowledged commit
    assert v.lost == 0 and not report.view.missing, report.render()
    assert v.unexpected == 0 and v.duplicate_changes == 0
    # one region, transactions end to end: not even a repeated uuid in the topics
    assert v.duplicate_uuids == 0 and report.view.extra_deliveries == 0
    # the restarted router fences its predecessor at once: events flow again on every partition
    assert report.recovery.rto_s is not None and report.recovery.rto_s < 60, report.recovery
    assert report.ok
    # the drill cleans up after itself: no topic of its own left, no slot pinning WAL
    admin = AdminClient(conns.kafka.to_librdkafka())
    deadline = time.monotonic() + 20  # deleted topics leave the metadata a moment later
    while (left := [t for t in admin.list_topics(timeout=15).topics if t.startswith(f"{name}-")]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.5)
    assert not left
    assert not list(Path(tempfile.gettempdir()).glob(f"cdcrouter-{name}-*"))  # its files and logs too
    slot = DrillPipeline(name, Path(".")).slot
    with psycopg.connect(conns.postgres.conninfo()) as c:
        assert (
            c.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone() is None
        )
