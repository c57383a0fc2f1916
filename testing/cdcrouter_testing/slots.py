"""Waits on replication slots, for tests that run capture (or Debezium) outside the test process."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psycopg


def wait_slot_active(
    conninfo: str,
    slot: str,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    timeout_s: float = 90,
    who: str = "capture",
) -> None:
    """Return once ``slot`` is active (``who`` streams from it); fail at once if ``proc`` exited
    (with the end of its ``log``), or after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    query = "SELECT active FROM pg_replication_slots WHERE slot_name = %s"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"{who} exited early" + (f": {log.read_text()[-2000:]}" if log else ""))
            if (row := conn.execute(query, (slot,)).fetchone()) and row[0]:
                return
            time.sleep(0.1)
    raise AssertionError(f"{who} never became active on slot {slot}")
