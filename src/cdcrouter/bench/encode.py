"""Micro-benchmark of the capture's row encoder alone: CPU time per change of
:class:`~cdcrouter.capture.fastpath.RowEncoder` on real pgoutput messages.

A full ``cdcrouter bench capture`` drain needs Kafka, a quiet machine and minutes; the encoder is
60% of its CPU (docs/capture.md). This replays messages captured once from PostgreSQL, in the
bench's workload shape (half INSERTs, half UPDATEs of ``price``/``updated_at`` under REPLICA
IDENTITY FULL), and times ``time.process_time()`` per change, which other processes' load moves
far less than a wall-clock rate.

    python -m cdcrouter.bench.encode capture FILE --changes 20000   # needs the shared PostgreSQL
    python -m cdcrouter.bench.encode run FILE --runs 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from cdcrouter.bench.stats import load_average
from cdcrouter.capture import source
from cdcrouter.capture.avro_fast import encode_long
from cdcrouter.capture.domain import apply_domain
from cdcrouter.capture.fastpath import RowEncoder
from cdcrouter.capture.normalize import TableShape
from cdcrouter.capture.pgoutput import PgOutputDecoder, Relation
from cdcrouter.capture.pipeline import pipeline_from_dict

_HEAD = struct.Struct(">QI")  # lsn, length


def capture_messages(
    conninfo: str,
    name: str,
    workload: Callable[[psycopg.Connection], None],
    tables: tuple[str, ...] = ("car_entities",),
    full: tuple[str, ...] = ("car_entities",),
) -> list[tuple[int, bytes]]:
    """Runs ``workload`` in a fresh schema ``name`` (the sample domain, REPLICA IDENTITY FULL on
    ``full``) and returns every pgoutput message it produced as (lsn, bytes), through a slot
    and publication of the same name, all dropped afterwards."""
    schema, ident = sql.Identifier(name), sql.Identifier
    apply_domain(conninfo, name)
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(schema))
            for t in full:
                conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(ident(t)))
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                    ident(name), sql.SQL(", ").join(sql.Identifier(name, t) for t in tables)
                )
            )
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
            try:
                workload(conn)
                rows = conn.execute(
                    "SELECT lsn::text, data FROM pg_logical_slot_get_binary_changes(%s, NULL, NULL, "
                    "'proto_version', '1', 'publication_names', %s)",
                    (name, name),
                ).fetchall()
            finally:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
                conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(ident(name)))
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))
    out = []
    for lsn, data in rows:
        hi, lo = lsn.split("/")
        out.append(((int(hi, 16) << 32) | int(lo, 16), bytes(data)))
    return out


def bench_workload(n: int, prefix: str = "C") -> Callable[[psycopg.Connection], None]:
    """``cdcrouter bench capture``'s backlog: n/2 INSERTs, then n/2 UPDATEs of price and
    updated_at, 1,000 rows per transaction."""

    def run(conn: psycopg.Connection) -> None:
        half = n // 2
        for a in range(0, half, 1000):
            b = min(a + 1000, half) - 1
            conn.execute(
                "INSERT INTO car_entities (id, vin, make, model, model_year, price, color, created_at, "
                "updated_at) SELECT %s || g, 'VIN' || g, 'Volvo', 'XC40', 2020, 41999.90, 'red', now(), "
                f"now() FROM generate_series({a}, {b}) g",
                (prefix,),
            )
        for a in range(0, n - half, 1000):
            b = min(a + 1000, n - half) - 1
            conn.execute(
                "UPDATE car_entities SET price = price + 1, updated_at = now() "
                f"WHERE id IN (SELECT %s || g FROM generate_series({a}, {b}) g)",
                (prefix,),
            )

    return run


def shapes(conninfo: str, relations: list[Relation]) -> dict[str, TableShape]:
    """The TableShape the engine builds for each sample-domain relation (catalog kinds), from a
    scratch copy of the sample domain."""
    from cdcrouter.capture.domain import SAMPLE_TABLES

    schema = f"encbench_{uuid.uuid4().hex[:8]}"
    p = pipeline_from_dict(
        {
            "schema": schema,
            "raw_topic": {"name": "unused"},
            "replication": {"slot": "unused", "publication": "unused", "snapshot": "never"},
            "tables": SAMPLE_TABLES,
        }
    )
    apply_domain(conninfo, schema)
    try:
        with psycopg.connect(conninfo) as conn:
            infos = source.inspect_tables(conn, schema, [r.name for r in relations])
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    out = {}
    for rel in relations:
        info = infos[rel.name]
        out[rel.name] = TableShape(
            rel.name,
            p.entity_type(rel.name),
            source.id_columns(p, info),
            {c.name: c.kind or "plain" for c in info.columns},
            {op: p.event_name(rel.name, op) for op in ("INSERT", "UPDATE", "DELETE", "SNAPSHOT")},
            p.tables[rel.name].event_type,
        )
    return out


def save(path: Path, messages: list[tuple[int, bytes]]) -> None:
    path.write_bytes(b"".join(_HEAD.pack(lsn, len(b)) + b for lsn, b in messages))


def load(path: Path) -> list[tuple[int, bytes]]:
    data, pos, out = path.read_bytes(), 0, []
    while pos < len(data):
        lsn, n = _HEAD.unpack_from(data, pos)
        pos += _HEAD.size
        out.append((lsn, data[pos : pos + n]))
        pos += n
    return out


def encoders(
    messages: list[tuple[int, bytes]], shape_of: dict[str, TableShape]
) -> tuple[dict[int, RowEncoder], list[tuple[int, bytes]]]:
    """A RowEncoder per Relation message, and the Insert/Update/Delete messages."""
    dec, rows, changes = PgOutputDecoder(), {}, []
    for lsn, buf in messages:
        if buf[:1] == b"R":
            rel = dec.decode(buf)
            assert isinstance(rel, Relation)
            rows[rel.oid] = RowEncoder(rel, shape_of[rel.name], b"\x00\x00\x00\x00\x07")
        elif buf[:1] in (b"I", b"U", b"D"):
            changes.append((lsn, buf))
    return rows, changes


def time_run(rows: dict[int, RowEncoder], changes: list[tuple[int, bytes]]) -> float:
    """CPU µs per change of one pass of the encoder over ``changes``."""
    ms, saved = encode_long(1_765_000_000_000), encode_long(1_765_000_000_007)
    enc = [(rows[int.from_bytes(buf[1:5], "big")].encode, lsn, buf) for lsn, buf in changes]
    t0 = time.process_time()
    for encode, lsn, buf in enc:
        encode(buf, lsn, ms, saved)
    return (time.process_time() - t0) * 1e6 / len(changes)


def run(path: Path, runs: int, conninfo: str) -> dict[str, Any]:
    messages = load(path)
    dec = PgOutputDecoder()
    rels = [r for _, b in messages if b[:1] == b"R" for r in [dec.decode(b)] if isinstance(r, Relation)]
    rows, changes = encoders(messages, shapes(conninfo, rels))
    time_run(rows, changes)  # warm-up
    per = [time_run(rows, changes) for _ in range(runs)]
    return {
        "changes": len(changes),
        "runs": runs,
        "cpu_us_per_change_median": round(statistics.median(per), 3),
        "cpu_us_per_change_range": [round(min(per), 3), round(max(per), 3)],
        "load_average": load_average(),
    }


def main(argv: list[str] | None = None) -> int:
    from cdcrouter.config.connections import load_connections

    ap = argparse.ArgumentParser(prog="python -m cdcrouter.bench.encode", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("capture", help="capture the bench workload's messages into FILE")
    c.add_argument("file", type=Path)
    c.add_argument("--changes", type=int, default=20000)
    r = sub.add_parser("run", help="time the encoder on FILE")
    r.add_argument("file", type=Path)
    r.add_argument("--runs", type=int, default=7)
    a = ap.parse_args(argv)
    conninfo = load_connections().postgres.conninfo()
    if a.cmd == "capture":
        name = f"encbench_{uuid.uuid4().hex[:8]}"
        msgs = capture_messages(conninfo, name, bench_workload(a.changes))
        save(a.file, msgs)
        print(json.dumps({"messages": len(msgs), "file": str(a.file)}))
    else:
        print(json.dumps(run(a.file, a.runs, conninfo)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
