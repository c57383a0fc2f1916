"""Snapshot bookkeeping without a stack: position records written before chunked snapshots still
read (no snapshot pending, tables unknown), the progress arithmetic, and the re-snapshot
condition check that keeps a request from ending the chunk query."""

from __future__ import annotations

import json

import pytest

from cdcrouter.capture.sink import Offsets
from cdcrouter.capture.snapshot import TableSnapshot, describe_snapshot, progress_of, where_problem


def test_a_position_record_from_before_chunked_snapshots_reads_as_done() -> None:
    old = json.dumps(
        {
            "commit_lsn": 5,
            "end_lsn": 9,
            "snapshot_done": True,
            "events_total": 3,
            "committed_at_ms": 1,
            "last_commit_ms": 1,
            "rate": 0.0,
        }
    ).encode()
    pos = Offsets.from_json(old)
    assert (pos.end_lsn, pos.snapshot_done, pos.snapshot, pos.tables) == (9, True, (), None)


def test_snapshot_progress_round_trips_through_the_position_record() -> None:
    snap = TableSnapshot("cars", "initial", None, ["C00042"], 42, 100, 1_000)
    pos = Offsets(0, 7, False, 42, 2_000, 2_000, 0.0, (snap.to_dict(),), ("cars", "loans"))
    back = Offsets.from_json(pos.to_json())
    assert back == pos
    assert TableSnapshot.from_dict(back.snapshot[0]) == snap
    pr = progress_of(snap, 0, now_ms=3_000)  # 42 rows in 2 s
    assert (pr.rows, pr.estimate, pr.rows_per_s, pr.eta_s) == (42, 100, 21.0, pytest.approx(58 / 21))
    assert describe_snapshot(pr).startswith("snapshot of cars: 42 of ~100 rows (42%), 21 rows/s")


@pytest.mark.parametrize(
    "where",
    ["id > 5", "make = 'a;b' AND (model_year BETWEEN 1 AND 3)", "\"Odd Col\" = 'it''s'", "x ~ '--'"],
)
def test_plain_conditions_pass(where: str) -> None:
    assert where_problem(where) is None


@pytest.mark.parametrize(
    ("where", "problem"),
    [
        ("true) TO '/tmp/x' --", "unbalanced ')'"),
        ("id > 1; DROP TABLE cars", "';' is not allowed"),
        ("id > 1 -- rest", "'--' is not allowed"),
        ("id > 1 /* x */", "'/*' is not allowed"),
        ("name = $$x$$", "'$' is not allowed"),
        ("name = E'\\''", "a backslash is not allowed"),
        ("name = E'\\'' ) TO '/tmp/x' -- '", "a backslash is not allowed"),
        ("(id > 1", "unbalanced '('"),
        ("name = 'open", "unterminated quote"),
    ],
)
def test_conditions_that_could_end_the_query_are_refused(where: str, problem: str) -> None:
    assert problem in (where_problem(where) or "")
