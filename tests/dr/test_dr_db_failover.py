"""Database failover on real processes: a primary and its physical standby, kill -9 of the primary
under steady writes, promotion, and capture carrying on.

The oracle is PostgreSQL's: the ids whose INSERT the server acknowledged and the rows the promoted
standby holds, against the entity ids and uuids read back from the raw topic (read_committed).
Each test starts its own primary and standby (scratch dir, free ports); Kafka and the registry are
the shared stack's.
"""

from __future__ import annotations

from typing import Any

import pytest

from cdcrouter.capture.pgoutput import str_to_lsn
from cdcrouter.dr.db_failover import run_db_failover

pytestmark = pytest.mark.integration


def test_capture_follows_a_promotion_from_the_failover_slot_on_18(stack: Any) -> None:
    result = run_db_failover(stack.connections, pg_version="18")
    summary = result.describe()
    assert result.acknowledged_after_kill > 0, f"no write reached the promoted standby\n{summary}"
    assert result.lost == 0 and result.lost_by_database == 0, summary
    assert result.duplicates == 0 and result.resent_by_snapshot == 0, summary
    assert result.events == result.rows_on_new_primary, summary  # one INSERT event per row, no more
    assert result.slot_kept and result.capture_error is None, summary
    assert result.capture_reconnects >= 1, "capture never noticed the primary was gone"
    assert 0 < result.rto_s < 120, summary


def test_pg15_failover_stops_with_the_resnapshot_command_and_reports_the_bridged_window(stack: Any) -> None:
    result = run_db_failover(stack.connections, pg_version="15")
    summary = result.describe()
    assert not result.slot_kept
    assert result.capture_error and "promoted (timeline 2)" in result.capture_error, summary
    assert "PostgreSQL 15 has no failover slots" in result.capture_error, summary
    assert result.capture_hint and "cdcrouter capture run --pipeline pipeline.yaml --resnapshot" in (
        result.capture_hint
    ), summary
    bridged = result.bridged
    assert bridged is not None, summary
    assert str_to_lsn(bridged["from_lsn"]) < str_to_lsn(bridged["to_lsn"]), bridged
    assert bridged["tables"] == ["dr_orders"] and bridged["timeline"] == 2, bridged
    # every committed row is in Kafka: streamed before the kill, or sent by the snapshot
    assert result.lost == 0 and result.lost_by_database == 0, summary
    assert result.duplicates == 0, summary  # no uuid twice; re-sent rows carry their snapshot uuid
    assert result.acknowledged_after_kill > 0, summary
