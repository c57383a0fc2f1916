"""The drill's steady workload: one PostgreSQL table, one row per change, every commit recorded.

Each change is an INSERT of a new row whose ``val`` is a fresh random hex string, so a change is
identified by ``(id, val)`` whatever pipeline carried it, and the table itself is the oracle the
drill checks the pipeline against: a row PostgreSQL has is a change that was committed. The writer
also keeps what the client saw: a commit acknowledged (``acked``), or a commit whose outcome is
unknown because the connection broke during it (``in_doubt``: the surviving database decides).
It keeps writing through a failure, reconnecting with a short backoff, so the changes committed
right after a failover are what measures the recovery time.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

log = logging.getLogger("cdcrouter.dr")

ENTITY_TYPE = "DrillRow"


@dataclass(frozen=True, slots=True)
class Change:
    """One committed (or in-doubt) change: the row's key and its unique value."""

    id: str
    val: str
    n: int
    at: float  # time.time() when the client saw the commit end (or fail)
    txid: int | None = None


@dataclass
class WorkloadLog:
    """What the writer saw, in commit order."""

    acked: list[Change] = field(default_factory=list)
    in_doubt: list[Change] = field(default_factory=list)
    failed: int = 0  # statements that failed before COMMIT: certainly not committed
    reconnects: int = 0
    first_error_at: float | None = None
    errors: list[str] = field(default_factory=list)  # the first few, for the report

    def note_error(self, exc: BaseException) -> None:
        if self.first_error_at is None:
            self.first_error_at = time.time()
        if len(self.errors) < 5:
            self.errors.append(f"{type(exc).__name__}: {str(exc).strip()[:200]}")


def table_ddl(schema: str, table: str) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {}.{} (id text PRIMARY KEY, val text NOT NULL, n bigint NOT NULL,"
        " written_at timestamptz NOT NULL DEFAULT clock_timestamp())"
    ).format(sql.Identifier(schema), sql.Identifier(table))


def create_table(conninfo: str, schema: str, table: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(table_ddl(schema, table))


def committed_rows(conninfo: str, schema: str, table: str) -> dict[str, str]:
    """The oracle: every row the (surviving) database has, ``id -> val``."""
    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        rows = conn.execute(
            sql.SQL("SELECT id, val FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        ).fetchall()
    return {r[0]: r[1] for r in rows}


class SteadyWorkload:
    """Writes ``rate`` changes/s into ``schema.table`` from a thread until stopped.

    Args:
        conninfo: where to write; a callable is asked again on every reconnect (a failover may move
            the primary), a libpq multi-host string with ``target_session_attrs=read-write`` works too.
        schema, table: the drill's table (see :func:`create_table`).
        run_id: put into every row id, so several drills on one database never collide.
        rate: changes per second.
        rows_per_txn: rows per transaction (1: one change per commit).
    """

    def __init__(
        self,
        conninfo: str | Callable[[], str],
        schema: str,
        table: str,
        run_id: str,
        rate: float = 50.0,
        rows_per_txn: int = 1,
    ) -> None:
        self._conninfo = conninfo if callable(conninfo) else (lambda: conninfo)
        self.schema, self.table, self.run_id = schema, table, run_id
        self.rate = rate
        self.rows_per_txn = max(1, rows_per_txn)
        self.log = WorkloadLog()
        self._n = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._insert = sql.SQL("INSERT INTO {}.{} (id, val, n) VALUES (%s, %s, %s)").format(
            sql.Identifier(schema), sql.Identifier(table)
        )

    # ------------------------------------------------------------------ control

    def start(self) -> SteadyWorkload:
        self._thread = threading.Thread(target=self._run, name="dr-workload", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> WorkloadLog:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return self.log

    @property
    def written(self) -> int:
        return len(self.log.acked)

    def wait_for(self, acked: int, timeout: float) -> bool:
        """Until ``acked`` commits were acknowledged (or ``timeout`` seconds passed)."""
        deadline = time.monotonic() + timeout
        while len(self.log.acked) < acked and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(self.log.acked) >= acked

    # ------------------------------------------------------------------ the writer

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self._conninfo(), connect_timeout=3)

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        next_at = time.monotonic()
        done = 0
        while not self._stop.is_set():
            # paced on the clock; after an outage it resumes at the rate, without a catch-up burst
            now = time.monotonic()
            if next_at > now and self._stop.wait(next_at - now):
                break
            next_at = max(next_at, time.monotonic() - 0.5) + (
                self.rows_per_txn / self.rate if self.rate > 0 else 0
            )
            if conn is None or conn.closed or conn.broken:
                try:
                    conn = self._connect()
                except psycopg.Error as exc:
                    self.log.note_error(exc)
                    self._stop.wait(0.2)
                    continue
                if done:
                    self.log.reconnects += 1
            rows = []
            for _ in range(self.rows_per_txn):
                self._n += 1
                rows.append((f"{self.run_id}-{self._n:08d}", secrets.token_hex(8), self._n))
            try:
                with conn.cursor() as cur:
                    cur.executemany(self._insert, rows)
                    txid = cur.execute("SELECT txid_current()").fetchone()
            except psycopg.Error as exc:  # failed before COMMIT: not committed
                self.log.failed += len(rows)
                self.log.note_error(exc)
                self._close(conn)
                conn = None
                continue
            try:
                conn.commit()
            except psycopg.Error as exc:  # the outcome is unknown: the surviving database decides
                now = time.time()
                self.log.in_doubt.extend(Change(i, v, n, now) for i, v, n in rows)
                self.log.note_error(exc)
                self._close(conn)
                conn = None
                continue
            now = time.time()
            tx = int(txid[0]) if txid else None
            self.log.acked.extend(Change(i, v, n, now, tx) for i, v, n in rows)
            done += len(rows)
        if conn is not None:
            self._close(conn)

    @staticmethod
    def _close(conn: psycopg.Connection) -> None:
        with contextlib.suppress(psycopg.Error):  # a broken connection
            conn.close()
