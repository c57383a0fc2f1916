"""Chunked snapshots that run while capture streams (the watermark algorithm of DBLog).

A table is read in chunks in primary-key order (keyset pagination: ``WHERE (key) > (last key)
ORDER BY key LIMIT n``), by the capture loop itself, between two stream messages:

1. The chunk is read in a REPEATABLE READ transaction. Every change the loop has streamed so far
   must be visible to that read; if one is not (its commit was in the WAL, but not yet visible
   to new snapshots), the chunk is dropped and read again a moment later.
2. A high watermark is written into the WAL (``pg_logical_emit_message(false,
   'cdcrouter-watermark', '<slot>/<mark>')``) and streaming goes on.
3. A streamed change to a key of the chunk, read before the watermark, is as new as the row read,
   or newer: a DELETE removes the row from the chunk, an INSERT or UPDATE replaces it with the
   change's new row (streamed UPDATEs report only the changed columns; the SNAPSHOT event keeps
   the whole row).
4. From the watermark on, the rows left go out as SNAPSHOT events, in key order, a slice between
   two stream messages (changes streamed meanwhile still refresh or remove rows not yet sent).
   The Kafka transaction that holds a slice commits the snapshot's progress (the last key sent)
   in the capture position record. A crash therefore resumes after the last committed key, and
   no row is sent twice.

Changes committed after the watermark follow the chunk's rows, so no row is reported stale after
a newer change. Memory is one chunk. Re-snapshots (``cdcrouter capture snapshot``) arrive as
transactional logical messages with the prefix ``cdcrouter-signal``; capture reads them from its
own stream, so a request counts once, in commit order.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import psycopg
from psycopg import sql

from cdcrouter.capture import source
from cdcrouter.capture.normalize import UNCHANGED, RowChange, TableShape, event_key, normalize_row
from cdcrouter.capture.pgoutput import Change, LogicalMessage
from cdcrouter.capture.pipeline import Pipeline
from cdcrouter.config.connections import PostgresSettings
from cdcrouter.errors import CaptureError

WATERMARK_PREFIX = "cdcrouter-watermark"
SIGNAL_PREFIX = "cdcrouter-signal"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class TableSnapshot:
    """One table's snapshot, as the capture position record keeps it (JSON)."""

    table: str
    id: str  # "initial", "added" (a table new in the pipeline) or a signal's id
    where: str | None = None  # a re-snapshot of part of the table
    after: list[str | None] | None = None  # the last key sent; None before the first chunk
    rows: int = 0
    estimate: int = 0  # the planner's estimate (pg_class.reltuples) when it was queued
    started_ms: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TableSnapshot:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


@dataclass(frozen=True)
class SnapshotProgress:
    table: str
    rows: int
    estimate: int
    rows_per_s: float
    eta_s: float | None
    queued: int  # table snapshots waiting behind this one


def progress_of(snap: TableSnapshot, queued: int, now_ms: int | None = None) -> SnapshotProgress:
    now_ms = now_ms or _now_ms()
    secs = (now_ms - snap.started_ms) / 1000 if snap.started_ms else 0.0
    rate = snap.rows / secs if secs > 0 else 0.0
    left = max(0, snap.estimate - snap.rows)
    return SnapshotProgress(snap.table, snap.rows, snap.estimate, rate, left / rate if rate else None, queued)


def describe_snapshot(pr: SnapshotProgress | None) -> str:
    """One progress line: rows done of the estimate, rows/s, ETA."""
    if pr is None:
        return "no snapshot pending"
    pct = f" ({100 * pr.rows / pr.estimate:.0f}%)" if pr.estimate else ""
    eta = f", ETA {pr.eta_s:,.0f} s" if pr.eta_s is not None else ""
    queued = f"; {pr.queued} more queued" if pr.queued else ""
    return (
        f"snapshot of {pr.table}: {pr.rows:,} of ~{pr.estimate:,} rows{pct}, "
        f"{pr.rows_per_s:,.0f} rows/s{eta}{queued}"
    )


def estimate_rows(conn: psycopg.Connection, schema: str, table: str, *filters: str | None) -> int:
    """The planner's row estimate (from pg_class.reltuples; partitions included)."""
    cond = sql.SQL(" AND ").join(sql.SQL("({})").format(sql.SQL(f)) for f in filters if f)  # type: ignore[arg-type]
    query = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {}.{} WHERE {}").format(
        sql.Identifier(schema), sql.Identifier(table), cond if any(filters) else sql.SQL("true")
    )
    plan = conn.execute(query).fetchone()[0]  # type: ignore[index]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def initial_queue(pg: PostgresSettings, pipeline: Pipeline, exported: str) -> list[TableSnapshot]:
    """The tables to snapshot after the slot was created: those that had rows at the slot's
    start (``exported``: the slot's snapshot, valid while its connection stays idle). A table
    empty then gets no SNAPSHOT events at all: its rows arrive as streamed INSERTs."""
    queue = []
    with source.pg_errors("cannot inspect the tables to snapshot", pg):
        conn = source.connect_sql(pg)
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(exported)))
            for table, spec in pipeline.tables.items():
                cond = sql.SQL(spec.row_filter or "true")  # type: ignore[arg-type]
                query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {}.{} WHERE {})").format(
                    sql.Identifier(pipeline.schema), sql.Identifier(table), cond
                )
                if conn.execute(query).fetchone()[0]:  # type: ignore[index]
                    est = estimate_rows(conn, pipeline.schema, table, spec.row_filter)
                    queue.append(TableSnapshot(table, "initial", estimate=est))
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    return queue


def where_problem(where: str) -> str | None:
    """Why ``where`` is not one plain SQL condition, or None.

    It is pasted into the chunk query, and any role that may call pg_logical_emit_message can
    send a request, so it must not be able to end the condition or the statement: parentheses
    balance outside quotes; no ``;``, comments, dollar quotes or backslashes.
    """
    depth, quote = 0, ""
    for i, ch in enumerate(where):
        if ch == "\\":  # anywhere: E'\'' would end a string where this scan sees it go on
            return "a backslash is not allowed (one condition, no statements or comments)"
        if quote:
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                return f"unbalanced ')' at character {i + 1}"
        elif ch in ";$\\" or where.startswith(("--", "/*"), i):
            token = ch if ch in ";$\\" else where[i : i + 2]
            return f"{token!r} is not allowed (one condition, no statements or comments)"
    if quote:
        return "an unterminated quote"
    if depth:
        return "unbalanced '('"
    return None


def signal_message(slot: str, table: str, where: str | None) -> tuple[str, str]:
    """(id, content) of a re-snapshot request for the capture on ``slot``."""
    sid = uuid.uuid4().hex[:12]
    return sid, json.dumps({"slot": slot, "action": "snapshot", "table": table, "where": where, "id": sid})


def request_snapshot(pipeline: Pipeline, pg: PostgresSettings, table: str, where: str | None) -> str:
    """Ask the capture on the pipeline's slot to snapshot ``table`` again (rows matching
    ``where``): a transactional logical message the capture reads from its own stream, so a
    running capture queues it without stopping, and a stopped one when it starts. Returns its id.

    Raises:
        CaptureError: not a captured table, no slot yet, or ``where`` is not a valid condition.
    """
    if table not in pipeline.tables:
        raise CaptureError(
            f"{table!r} is not a captured table of the pipeline",
            hint=f"captured tables: {', '.join(pipeline.tables)}",
        )
    if where is not None:
        problem = where_problem(where)
        if problem:
            raise CaptureError(
                f"--where {where!r}: {problem}", hint='give one SQL condition, e.g. "id > 100"'
            )
    slot = pipeline.replication.slot
    conn = source.connect_sql(pg)
    try:
        with source.pg_errors("cannot look up the replication slot", pg):
            if not source.slot_exists(conn, slot):
                raise CaptureError(
                    f"replication slot {slot} does not exist: capture has not started yet",
                    hint="start it with `cdcrouter capture run`; its initial snapshot covers every table",
                )
        try:
            estimate_rows(conn, pipeline.schema, table, pipeline.tables[table].row_filter, where)
        except psycopg.Error as exc:
            raise CaptureError(
                f"--where {where!r} is not a valid condition on {pipeline.schema}.{table}: "
                f"{str(exc).strip().splitlines()[0]}",
                hint=f"use the columns of {table} in one SQL condition",
            ) from exc
        sid, content = signal_message(slot, table, where)
        with source.pg_errors("cannot send the snapshot request", pg):
            conn.execute("SELECT pg_logical_emit_message(true, %s, %s)", (SIGNAL_PREFIX, content))
        return sid
    finally:
        conn.close()


@dataclass
class _Plan:
    columns: list[str]  # what events report
    select: list[str]  # columns, then key columns that are excluded from events
    keys: list[str]
    key_pos: tuple[int, ...]
    shape: TableShape
    unique: bool  # the keys are the primary key: no two rows share them, none is NULL


@dataclass
class _Chunk:
    mark: str
    snap: TableSnapshot
    plan: _Plan
    rows: dict[tuple[str | None, ...], tuple[str | None, ...]]  # key -> row, in key order
    last: list[str | None]
    short: bool  # fewer rows than asked for: the table's last chunk
    order: list[tuple[str | None, ...]] | None = None  # set at the watermark: the keys to send
    sent: int = 0  # how far through ``order`` the rows have gone out
    position: str = ""  # "snapshot:<watermark LSN>:<table>", the rows' uuid source


class SnapshotRunner:
    """The snapshot side of the capture loop: which table is next, one chunk in memory at most.

    The loop calls :meth:`next_chunk` between PostgreSQL transactions, :meth:`saw` for each
    change to the chunk's table (oids in :attr:`watch`), :meth:`on_watermark` for each
    watermark, then :meth:`drain` until the chunk is sent; each Kafka transaction carries
    :meth:`state` as it is when the transaction commits.
    """

    def __init__(
        self,
        pg: PostgresSettings,
        pipeline: Pipeline,
        infos: dict[str, source.TableInfo],
        shape_of: Callable[[str], TableShape],
        encode: Callable[[dict[str, Any]], bytes],
        queue: list[TableSnapshot],
        say: Callable[[str], None],
    ) -> None:
        self.pg, self.pipeline, self.infos = pg, pipeline, infos
        self.shape_of, self.encode, self.say = shape_of, encode, say
        self.queue = queue
        self.chunk: _Chunk | None = None
        self.dirty = False  # progress changed since the last position record
        self.recent: deque[int] = deque(maxlen=4096)  # xids of the last streamed transactions
        self.watch: set[int] = set()  # relation oids of the chunk's table, while it waits
        self.oids: dict[str, set[int]] = {}  # table -> relation oids seen in the stream
        self.dropped = 0  # chunk rows removed or refreshed because a streamed change was newer
        self.rereads = 0  # chunks read again because their snapshot missed a streamed change
        self.finished: list[TableSnapshot] = []  # done since the engine last looked (metrics)
        self._plans: dict[str, _Plan] = {}
        self._conn: psycopg.Connection | None = None

    # --- state ------------------------------------------------------------------------------

    def state(self) -> tuple[dict[str, Any], ...]:
        return tuple(s.to_dict() for s in self.queue)

    def progress(self) -> SnapshotProgress | None:
        return progress_of(self.queue[0], len(self.queue) - 1) if self.queue else None

    def relation(self, table: str, oid: int) -> None:
        """A Relation message: remember which oids carry ``table``'s changes; its columns may
        have changed (the engine has looked at the table again), so plan its chunks anew."""
        self.oids.setdefault(table, set()).add(oid)
        self._plans.pop(table, None)

    def enqueue(self, table: str, sid: str, where: str | None = None) -> TableSnapshot:
        spec = self.pipeline.tables[table]
        try:
            estimate = estimate_rows(self._connection(), self.pipeline.schema, table, spec.row_filter, where)
        except psycopg.OperationalError:
            self._drop_connection()
            raise  # the stream starts again from the committed position, this request included
        except psycopg.Error:
            estimate = 0  # a bad filter: the first chunk reports it
        snap = TableSnapshot(table, sid, where, estimate=estimate)
        self.queue.append(snap)
        self.dirty = True
        return snap

    def on_signal(self, msg: LogicalMessage) -> None:
        """A ``cdcrouter capture snapshot`` request, read in its transaction's place."""
        try:
            req = json.loads(msg.content)
        except ValueError:
            self.say(f"ignored a malformed snapshot signal: {msg.content[:200]!r}")
            return
        if req.get("slot") != self.pipeline.replication.slot or req.get("action") != "snapshot":
            return  # another pipeline's
        table, where = req.get("table"), req.get("where") or None
        if table not in self.pipeline.tables:
            self.say(f"ignored snapshot signal {req.get('id')}: {table!r} is not a captured table")
            return
        if where is not None and (not isinstance(where, str) or where_problem(where)):
            self.say(f"ignored snapshot signal {req.get('id')}: its condition {where!r} is not allowed")
            return
        snap = self.enqueue(table, str(req.get("id")), where)
        where = f" where {snap.where}" if snap.where else ""
        self.say(f"snapshot {snap.id} of {table}{where} queued (about {snap.estimate:,} rows)")

    # --- chunks -----------------------------------------------------------------------------

    def next_chunk(self, chunk_rows: int) -> bool:
        """Read the next chunk and write its watermark. True when progress changed without a
        watermark to wait for (a table finished or was given up): commit it now."""
        if self.chunk is not None or not self.queue:
            return False
        snap = self.queue[0]
        if snap.table not in self.pipeline.tables:
            self.say(f"snapshot of {snap.table} dropped: the table is no longer captured")
            return self._finish()
        plan = self._plan(snap.table)
        try:
            problem = None if snap.started_ms or plan.unique else self._key_problem(plan, snap)
            if problem is None:
                seen, rows = self._read(plan, snap, chunk_rows)
        except psycopg.OperationalError:
            self._drop_connection()
            raise
        except psycopg.Error as exc:  # a bad --where, a dropped column: reported, not retried
            self.say(f"snapshot {snap.id} of {snap.table} given up: {str(exc).strip().splitlines()[0]}")
            return self._finish()
        if problem is not None:
            why = f"snapshot of {snap.table} cannot be chunked: {problem}"
            if snap.id in ("initial", "added"):
                raise CaptureError(
                    why,
                    hint=f"add a PRIMARY KEY to {snap.table} (or make tables.{snap.table}.entity_id unique "
                    f"and NOT NULL), or set replication.snapshot: never",
                )
            self.say(f"snapshot {snap.id} given up: {why}")
            return self._finish()
        if self._misses_streamed(seen):
            self.rereads += 1  # a commit not yet visible to new snapshots: read it again shortly
            return False
        if not snap.started_ms:
            snap.started_ms = _now_ms()
            where = f" where {snap.where}" if snap.where else ""
            self.say(f"snapshot of {snap.table}{where}: ~{snap.estimate:,} rows, chunks of {chunk_rows:,}")
        if not rows:
            return self._finish()
        pos = plan.key_pos
        mark = uuid.uuid4().hex[:16]
        self.chunk = _Chunk(
            mark,
            snap,
            plan,
            {tuple(r[i] for i in pos): r for r in rows},
            [rows[-1][i] for i in pos],
            len(rows) < chunk_rows,
        )
        self.watch = self.oids.setdefault(snap.table, set())
        slot = self.pipeline.replication.slot
        try:
            self._connection().execute(
                "SELECT pg_logical_emit_message(false, %s, %s)", (WATERMARK_PREFIX, f"{slot}/{mark}")
            )
        except psycopg.OperationalError:
            self._drop_connection()
            raise
        return False

    def _read(self, plan: _Plan, snap: TableSnapshot, limit: int) -> tuple[str, list[tuple[str | None, ...]]]:
        """One chunk, read in a REPEATABLE READ transaction, and that transaction's snapshot."""
        conn = self._connection()
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            seen = conn.execute("SELECT pg_current_snapshot()::text").fetchone()[0]  # type: ignore[index]
            with conn.cursor().copy(self._query(plan, snap, limit)) as copy:
                rows = [tuple(r) for r in copy.rows()]
        finally:
            conn.execute("ROLLBACK")
        return seen, rows

    def saw(self, change: Change) -> None:
        """A streamed change to the chunk's table before its watermark: it is as new as the row
        read, or newer. A DELETE removes the row. An INSERT or UPDATE refreshes it with the new
        row, so the SNAPSHOT event sent at the watermark carries the latest full row: a streamed
        UPDATE reports only the columns it changed, and the row's other columns must still reach
        consumers. An unchanged TOASTed value that PostgreSQL did not send keeps the value read."""
        chunk = self.chunk
        if chunk is None:
            return
        keys, rows = chunk.plan.keys, chunk.rows
        new = change.new
        new_key = tuple(new.get(k) for k in keys) if new else None
        if change.old:
            old_key = tuple(change.old.get(k) for k in keys)
            if old_key != new_key and rows.pop(old_key, None) is not None:  # type: ignore[arg-type]
                self.dropped += 1  # deleted, or its key changed
        if new is None or new_key not in rows:
            return
        row = rows[new_key]  # type: ignore[index]
        rows[new_key] = tuple(  # type: ignore[index]
            row[i] if (v := new.get(c, UNCHANGED)) is UNCHANGED else v  # type: ignore[misc]
            for i, c in enumerate(chunk.plan.select)
        )
        self.dropped += 1

    def on_watermark(self, msg: LogicalMessage) -> bool:
        """Whether ``msg`` is the chunk's watermark; then its rows go out through :meth:`drain`."""
        chunk = self.chunk
        if chunk is None or chunk.order is not None:
            return False
        if msg.content.decode() != f"{self.pipeline.replication.slot}/{chunk.mark}":
            return False
        chunk.order = list(chunk.rows)
        chunk.position = f"snapshot:{msg.lsn:X}:{chunk.snap.table}"
        return True

    @property
    def draining(self) -> bool:
        return self.chunk is not None and self.chunk.order is not None

    def drain(self, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` rows of the chunk past its watermark, as (key, Avro value), in key order.

        The loop sends a chunk in slices between stream messages, so streaming never waits for
        a whole chunk. Changes streamed meanwhile still refresh or remove rows not yet sent. The
        progress (``after``: the last key sent or removed) moves with each slice and rides in
        whatever Kafka transaction holds the slice; at the chunk's end it is the chunk's last key.
        """
        chunk = self.chunk
        assert chunk is not None and chunk.order is not None
        plan, snap = chunk.plan, chunk.snap
        now = _now_ms()
        cols, shape, encode, pos, rows = plan.columns, plan.shape, self.encode, chunk.position, chunk.rows
        end = min(len(chunk.order), chunk.sent + limit)
        out = []
        for key in chunk.order[chunk.sent : end]:
            row = rows.pop(key, None)
            if row is not None:
                event = normalize_row(RowChange("SNAPSHOT", dict(zip(cols, row)), None, pos, now), shape, now)  # noqa: B905
                out.append((event_key(event), encode(event)))
        chunk.sent = end
        snap.rows += len(out)
        if end:
            snap.after = list(chunk.order[end - 1])
        if end == len(chunk.order):  # the chunk is done
            snap.after = chunk.last
            self.chunk, self.watch = None, set()
            self.dirty = True
            if chunk.short:
                self._finish()
        return out

    # --- helpers ----------------------------------------------------------------------------

    def _finish(self) -> bool:
        snap = self.queue.pop(0)
        self.finished.append(snap)
        if snap.started_ms:
            secs = max(0.001, (_now_ms() - snap.started_ms) / 1000)
            self.say(f"snapshot of {snap.table} done: {snap.rows:,} rows in {secs:,.1f} s")
        self.dirty = True
        return True

    def _misses_streamed(self, seen: str) -> bool:
        """Whether a transaction the loop already streamed is invisible to this snapshot."""
        _xmin, xmax, xip = seen.split(":")
        top = int(xmax) & 0xFFFFFFFF
        running = {int(x) & 0xFFFFFFFF for x in xip.split(",") if x}
        return any(x in running or ((x - top) & 0xFFFFFFFF) < 0x80000000 for x in self.recent)

    def _plan(self, table: str) -> _Plan:
        plan = self._plans.get(table)
        if plan is None:
            p = self.pipeline
            info = self.infos[table]
            cols = [c.name for c in info.columns if c.name not in p.tables[table].exclude_columns]
            keys = list(info.primary_key or source.id_columns(p, info))
            select = cols + [k for k in keys if k not in cols]
            plan = self._plans[table] = _Plan(
                cols,
                select,
                keys,
                tuple(select.index(k) for k in keys),
                self.shape_of(table),
                bool(info.primary_key),
            )
        return plan

    def _key_problem(self, plan: _Plan, snap: TableSnapshot) -> str | None:
        """Why keyset chunks would lose rows of a table without a primary key: a key shared by two
        rows (a chunk boundary or the chunk's key map drops one) or a NULL key (never after any)."""
        keys = sql.SQL(", ").join(map(sql.Identifier, plan.keys))
        table = sql.SQL("{}.{}").format(sql.Identifier(self.pipeline.schema), sql.Identifier(snap.table))
        where = self._filters(snap) or [sql.SQL("true")]
        cond = sql.SQL(" AND ").join(where)
        any_null = sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(sql.Identifier(k)) for k in plan.keys)
        conn = self._connection()
        shared = conn.execute(
            sql.SQL("SELECT row({})::text FROM {} WHERE {} GROUP BY {} HAVING count(*) > 1 LIMIT 1").format(
                keys, table, cond, keys
            )
        ).fetchone()
        if shared:
            return f"{', '.join(plan.keys)} is not unique ({shared[0]} is on more than one row)"
        nulls = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE ({}) AND ({})").format(table, cond, any_null)
        ).fetchone()
        if nulls and nulls[0]:
            return f"{nulls[0]} rows have a NULL in {', '.join(plan.keys)}"
        return None

    def _filters(self, snap: TableSnapshot) -> list[sql.Composable]:
        extras = (self.pipeline.tables[snap.table].row_filter, snap.where)
        return [sql.SQL("({})").format(sql.SQL(e)) for e in extras if e]  # type: ignore[arg-type]

    def _query(self, plan: _Plan, snap: TableSnapshot, limit: int) -> sql.Composed:
        p = self.pipeline
        keys = sql.SQL(", ").join(map(sql.Identifier, plan.keys))
        conds: list[sql.Composable] = []
        if snap.after is not None:
            conds.append(
                sql.SQL("({}) > ({})").format(keys, sql.SQL(", ").join(map(sql.Literal, snap.after)))
            )
        conds += self._filters(snap)
        return sql.SQL("COPY (SELECT {} FROM {}.{} WHERE {} ORDER BY {} LIMIT {}) TO STDOUT").format(
            sql.SQL(", ").join(map(sql.Identifier, plan.select)),
            sql.Identifier(p.schema),
            sql.Identifier(snap.table),
            sql.SQL(" AND ").join(conds) if conds else sql.SQL("true"),
            keys,
            sql.Literal(limit),
        )

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = source.connect_sql(self.pg)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._drop_connection()
