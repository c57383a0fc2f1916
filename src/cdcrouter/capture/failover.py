"""What capture says, and does, when its database failed over to a standby.

PostgreSQL 17+ keeps a ``failover`` slot on a standby that runs ``sync_replication_slots``, so
capture resumes from it after a promotion (connections.postgres lists both hosts; libpq finds the
primary). When the slot did not come along (PostgreSQL 15-16, which have no failover slots, or a
17+ slot that was never synchronised), the changes between capture's last committed position and
a new slot cannot be read as changes any more: ``--resnapshot`` closes that gap with the chunked
snapshot, and :class:`BridgedWindow` says which window was bridged that way.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import psycopg

from cdcrouter.capture.pgoutput import lsn_to_str
from cdcrouter.capture.pipeline import Pipeline
from cdcrouter.capture.sink import Offsets
from cdcrouter.errors import CaptureError

FAILOVER_SLOTS_SINCE = 170000


def timeline(conn: psycopg.Connection) -> int | None:
    """The timeline the server writes WAL on: 1 for a server that was never promoted (or
    restored to a point in time), more after each promotion. None on a standby."""
    try:
        row = conn.execute(
            "SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END"
        ).fetchone()
    except psycopg.Error:
        return None
    return int(row[0][:8], 16) if row and row[0] else None


def resnapshot_command(pipeline: Pipeline) -> str:
    source = pipeline.source_file
    path = source if source and not source.startswith("<") else "pipeline.yaml"
    return f"cdcrouter capture run --pipeline {path} --resnapshot"


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000)) if ms else "unknown"


def slot_gone_error(conn: psycopg.Connection, pipeline: Pipeline, committed: Offsets | None) -> CaptureError:
    """The error for a slot that is missing where Kafka holds a position: after a failover it says
    so, and what to configure; in every case the exact command that closes the gap."""
    slot = pipeline.replication.slot
    where = f"after {lsn_to_str(committed.end_lsn)}" if committed else "since its last position"
    if committed and committed.last_commit_ms:
        where += f" (last captured commit at {_iso(committed.last_commit_ms)})"
    tables = ", ".join(pipeline.tables)
    fix = (
        f"close the gap with `{resnapshot_command(pipeline)}`: a new slot, and a chunked snapshot of "
        f"{tables} while streaming goes on; it prints the window it bridged (rows deleted in that "
        "window send no event)"
    )
    tli = timeline(conn)
    if not tli or tli <= 1:
        return CaptureError(
            f"replication slot {slot} is gone; the changes made {where} cannot be read any more", hint=fix
        )
    version = conn.info.server_version
    if version < FAILOVER_SLOTS_SINCE:
        why = (
            f"PostgreSQL {version // 10000} has no failover slots, so a promoted standby never has "
            "capture's slot"
        )
        then = "PostgreSQL 17+ with replication.failover: true keeps the slot across a failover"
    elif not pipeline.replication.failover:
        why = "the slot was not a failover slot (replication.failover is false)"
        then = "set replication.failover: true so the standby keeps a copy next time"
    else:
        why = (
            "the standby had no synchronised copy of it when it was promoted (a copy still "
            "catching up is dropped at promotion)"
        )
        then = (
            "check the standby runs sync_replication_slots = on, hot_standby_feedback = on, "
            "primary_slot_name and a dbname in primary_conninfo, and that its copy shows synced and "
            "not temporary in pg_replication_slots before a planned switchover"
        )
    return CaptureError(
        f"replication slot {slot} is not on this server, which was promoted (timeline {tli}): {why}; "
        f"the changes made {where} cannot be read as changes",
        hint=f"{fix}; {then} (docs/disaster-recovery.md)",
    )


def forked_error(
    pipeline: Pipeline, committed: Offsets, old_timeline: int, timeline: int, fork: int
) -> CaptureError:
    """The promoted standby lacks changes Kafka already has: it had not received them when the
    primary died (asynchronous replication, no ``synchronized_standby_slots``)."""
    return CaptureError(
        f"the promoted server's history leaves timeline {old_timeline} at {lsn_to_str(fork)} (now "
        f"timeline {timeline}), before the position capture already committed to Kafka "
        f"({lsn_to_str(committed.end_lsn)}): the changes between the two are in Kafka but not in this "
        "database, and its new changes would reuse WAL positions capture has passed and be skipped",
        hint=f"close the gap with `{resnapshot_command(pipeline)}` (consumers then see the lost changes "
        "undone only through the snapshot's row states); to prevent it, list the standby's physical "
        "slot in synchronized_standby_slots on the primary (PostgreSQL 17+, docs/disaster-recovery.md)",
    )


@dataclass(frozen=True)
class BridgedWindow:
    """The changes a re-snapshot stands in for: from the last position Kafka had to the new slot's
    start. Inside it, each table's rows arrive as SNAPSHOT events with their state at the snapshot,
    not as the individual changes."""

    slot: str
    from_lsn: str
    from_commit: str  # source commit time of the last captured transaction
    to_lsn: str
    to_time: str  # when the new slot was created
    tables: tuple[str, ...]
    timeline: int | None

    def describe(self) -> str:
        return (
            f"re-snapshot bridges the window from {self.from_lsn} (last captured commit "
            f"{self.from_commit}) to the new slot's start {self.to_lsn} ({self.to_time})"
            + (f" on timeline {self.timeline}" if self.timeline else "")
            + f": changes in it arrive as SNAPSHOT events of {', '.join(self.tables)} (each row's "
            "state at its chunk, not each change; a row deleted in the window sends no event)"
        )

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "tables": list(self.tables)}


def bridged_window(
    conn: psycopg.Connection, pipeline: Pipeline, prior: Offsets, new_start: int
) -> BridgedWindow | None:
    """The window a ``--resnapshot`` bridges (None when Kafka had no streamed position)."""
    if not prior.end_lsn:
        return None
    return BridgedWindow(
        pipeline.replication.slot,
        lsn_to_str(prior.end_lsn),
        _iso(prior.last_commit_ms),
        lsn_to_str(new_start),
        _iso(int(time.time() * 1000)),
        tuple(pipeline.tables),
        timeline(conn),
    )
