"""``capture status``: the slot as PostgreSQL sees it and the position as Kafka holds it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cdcrouter.capture import source
from cdcrouter.capture.pgoutput import lsn_to_str
from cdcrouter.capture.pipeline import Pipeline
from cdcrouter.capture.sink import Offsets, read_offsets
from cdcrouter.capture.snapshot import TableSnapshot, progress_of
from cdcrouter.config.connections import Connections


def capture_status(pipeline: Pipeline, conns: Connections) -> dict[str, Any]:
    """Slot state, retained WAL, what Kafka has committed (last event time, events/s), and the
    progress of a snapshot that is under way (rows, estimate, rows/s, ETA)."""
    slot = pipeline.replication.slot
    out: dict[str, Any] = {"slot": slot, "publication": pipeline.replication.publication}
    conn = source.connect_sql(conns.postgres)
    try:
        with source.pg_errors("cannot read replication slot state", conns.postgres):
            row = conn.execute(
                """
                SELECT active, active_pid, confirmed_flush_lsn::text,
                       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint,
                       wal_status, pg_current_wal_lsn()::text
                FROM pg_replication_slots WHERE slot_name = %s
                """,
                (slot,),
            ).fetchone()
            pub = conn.execute(
                "SELECT 1 FROM pg_publication WHERE pubname = %s", (pipeline.replication.publication,)
            ).fetchone()
    finally:
        conn.close()
    out["publication_exists"] = pub is not None
    out["slot_exists"] = row is not None
    if row is not None:
        active, pid, confirmed, retained, wal_status, current = row
        out.update(
            active=active,
            active_pid=pid,
            confirmed_flush_lsn=confirmed,
            retained_wal_bytes=retained,
            wal_status=wal_status,
            current_wal_lsn=current,
        )
    offsets = read_offsets(conns, pipeline.raw_topic.offsets_topic, slot, timeout_s=15, stall_s=3)
    out["raw_topic"] = pipeline.raw_topic.name
    if offsets is None:
        out["kafka"] = None
    else:
        out["kafka"] = {
            "committed_lsn": lsn_to_str(offsets.end_lsn),
            "events_total": offsets.events_total,
            "events_per_s": offsets.rate,
            "last_event_time": _iso(offsets.last_commit_ms),
            "last_commit_time": _iso(offsets.committed_at_ms),
            "snapshot_done": offsets.snapshot_done,
        }
        if offsets.snapshot:
            out["snapshot"] = _snapshot_progress(offsets)
    return out


def _snapshot_progress(offsets: Offsets) -> dict[str, Any]:
    """The running snapshot as of the last commit: rows done of the planner's estimate, ETA."""
    pending = [TableSnapshot.from_dict(d) for d in offsets.snapshot]
    pr = progress_of(pending[0], len(pending) - 1, offsets.committed_at_ms)
    return {
        "table": pr.table,
        "where": pending[0].where,
        "rows": pr.rows,
        "estimated_rows": pr.estimate,
        "percent": round(100 * pr.rows / pr.estimate, 1) if pr.estimate else None,
        "rows_per_s": round(pr.rows_per_s, 1),
        "eta_s": round(pr.eta_s) if pr.eta_s is not None else None,
        "queued": [s.table for s in pending[1:]],
    }


def _iso(ms: int) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
