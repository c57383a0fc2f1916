"""``cdcrouter dr drill --scenario db-primary`` on real processes: a primary and its synchronous
physical standby (private, free ports), capture, a router and the SDK consumer connected to both in
libpq's multi-host form, 50 INSERTs/s, kill -9 of the primary, the standby promoted.

The oracle is the drill table as the promoted standby has it and the commits PostgreSQL
acknowledged (dr/verify.py), against the events read back by uuid from the filtered topics.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from cdcrouter.capture.pgoutput import str_to_lsn
from cdcrouter.dr.drill import DrillOptions, run_drill
from cdcrouter.dr.scenarios.db import DbPrimaryKill

OPTS = {"rate": 50, "before_s": 2, "after_s": 4, "settle_s": 120}


def test_db_primary_killed_on_18_capture_resumes_from_the_failover_slot(
    stack, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    report = run_drill(
        DbPrimaryKill(pg_version="18"),
        stack.connections,
        DrillOptions(**OPTS, name=unique_name("dr"), workdir=tmp_path),
    )
    summary = report.render()
    assert report.error is None, summary
    v = report.verdict
    assert v is not None and report.view is not None and report.recovery is not None, summary
    assert report.acked >= 150, "the workload did not run: nothing was tested"
    assert v.committed == report.acked + v.in_doubt_committed, summary
    assert not v.db_lost, summary  # synchronous standby: every acknowledged commit survived the primary
    assert v.lost == 0 and not report.view.missing, summary
    # resumed from the synchronised slot: nothing sent twice, not even under the same uuid
    assert v.duplicate_uuids == 0 and v.duplicate_changes == 0 and v.unexpected == 0, summary
    assert not any("resnapshot" in n for n in report.notes), summary
    # changes committed on the promoted standby reached every partition of the filtered topics
    assert report.recovery.rto_s is not None and report.recovery.rto_s < 60, summary
    assert report.ok, summary


def test_db_primary_killed_on_15_resnapshot_bridges_the_lost_slot_and_says_which_window(
    stack, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    report = run_drill(
        DbPrimaryKill(pg_version="15"),
        stack.connections,
        DrillOptions(**OPTS, name=unique_name("dr"), workdir=tmp_path),
    )
    summary = report.render()
    assert report.error is None, summary
    notes = "\n".join(report.notes)
    # capture stopped with the cause and the exact command (the drill ran that command)
    assert "is not on this server, which was promoted (timeline 2)" in notes, summary
    assert "PostgreSQL 15 has no failover slots" in notes, summary
    assert re.search(
        r"hint: close the gap with `cdcrouter capture run --pipeline \S+ --resnapshot`", notes
    ), summary
    window = re.search(
        r"re-snapshot bridges the window from (\S+) .* to the new slot's start (\S+) \(.*", notes
    )
    assert window, summary
    assert str_to_lsn(window.group(1)) < str_to_lsn(window.group(2)), window.group(0)
    assert "on timeline 2" in window.group(0)
    v = report.verdict
    assert v is not None and report.view is not None, summary
    assert report.acked >= 150 and not v.db_lost, summary
    # nothing committed is missing: streamed before the kill, or sent again by the snapshot
    assert v.lost == 0 and not report.view.missing and v.unexpected == 0, summary
    # what a 15-16 failover costs: rows sent again as SNAPSHOT events, under a second uuid
    assert v.duplicate_uuids == 0 and v.duplicate_changes > 0, summary
