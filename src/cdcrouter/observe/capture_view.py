"""The capture section: ``capture status``'s own view (slot, retained WAL, committed position,
snapshot progress), plus how much the retained WAL grew while the status view sampled."""

from __future__ import annotations

from typing import Any

from cdcrouter.config import Connections


def capture_section(pipeline: Any, conns: Connections) -> dict[str, Any]:
    """:func:`cdcrouter.capture.status.capture_status` as is (it is what ``capture status`` shows),
    with ``snapshot`` always present (None when no snapshot is under way)."""
    from cdcrouter.capture.status import capture_status

    out = capture_status(pipeline, conns)
    out.setdefault("snapshot", None)
    return out


def retained_wal_bytes(conns: Connections, slot: str) -> int | None:
    """WAL the slot holds back now (``pg_current_wal_lsn() - restart_lsn``); None without the slot."""
    from cdcrouter.capture import source

    conn = source.connect_sql(conns.postgres)
    try:
        with source.pg_errors("cannot read replication slot state", conns.postgres):
            row = conn.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint"
                " FROM pg_replication_slots WHERE slot_name = %s",
                (slot,),
            ).fetchone()
    finally:
        conn.close()
    return None if row is None else row[0]
