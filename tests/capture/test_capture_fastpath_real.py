"""The row encoder (its Rust column walk included) gives the generic path's exact key and bytes on
real pgoutput messages from PostgreSQL: every column type of the sample domain, NULLs, TOASTed
values PostgreSQL does not resend, BC timestamps, key moves, REPLICA IDENTITY FULL and
DEFAULT. The oracle is the independent slow path: pgoutput decode -> RowChange -> normalize_row
-> AvroEncoder.encode."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import psycopg
import pytest

from cdcrouter.bench.encode import capture_messages, encoders, shapes
from cdcrouter.capture.avro_fast import encode_long
from cdcrouter.capture.fastpath import KeyMoved
from cdcrouter.capture.normalize import UNCHANGED, RowChange, event_key, moved_key, normalize_row
from cdcrouter.capture.pgoutput import Change, PgOutputDecoder, Relation
from cdcrouter.capture.sink import AvroEncoder

TABLES = ("car_entities", "loan_entities", "loan_payments", "service_records")
FULL = ("car_entities", "loan_entities", "service_records")  # loan_payments: DEFAULT identity


def _workload(conn: psycopg.Connection) -> None:
    big = "SELECT string_agg(md5(g::text), '') FROM generate_series(1, 400) g"  # ~12 KB: TOASTed
    conn.execute(
        "INSERT INTO car_entities (id, vin, make, model, model_year, price, color, notes) "
        "SELECT 'C' || g, 'VIN' || g, 'Volvo', 'XC40', CASE WHEN g % 3 = 0 THEN NULL ELSE 2020 END, "
        "41999.90 + g, CASE WHEN g % 2 = 0 THEN NULL ELSE 'red' END, "
        "CASE WHEN g % 4 = 0 THEN NULL ELSE 'note ' || g END FROM generate_series(1, 40) g"
    )
    conn.execute(f"UPDATE car_entities SET notes = ({big}) WHERE id IN ('C1', 'C2')")
    conn.execute("UPDATE car_entities SET price = price + 1, updated_at = now() + interval '1 s'")
    conn.execute("UPDATE car_entities SET active = NOT active, color = NULL WHERE id IN ('C1', 'C3')")
    conn.execute("UPDATE car_entities SET color = 'blue', model_year = 2021 WHERE id IN ('C1', 'C2', 'C6')")
    conn.execute("UPDATE car_entities SET price = price WHERE id = 'C5'")  # no column changes
    conn.execute("UPDATE car_entities SET updated_at = '2024-05-01 10:00:00.25+00' WHERE id IN ('C7', 'C8')")
    # a BC timestamp: not the common form, so that row takes the Python walk
    conn.execute("UPDATE car_entities SET updated_at = '0044-03-15 12:00:00+00 BC' WHERE id = 'C9'")
    conn.execute("UPDATE car_entities SET id = 'C1-moved' WHERE id = 'C1'")  # key move, TOASTed notes
    conn.execute("UPDATE car_entities SET id = 'C10-moved', price = 1 WHERE id = 'C10'")
    conn.execute(
        "INSERT INTO loan_entities (id, car_id, customer_name, loan, interest_rate, documents) VALUES "
        "('L1', 'C2', 'Ann', '{\"loanAmount\": 1000, \"terms\": {\"months\": 12}}', 0.05, NULL), "
        f"('L2', 'C3', 'Bob', '{{}}', NULL, ({big}))"
    )
    conn.execute("UPDATE loan_entities SET loan = jsonb_set(loan, '{terms,months}', '24'), approved = true")
    conn.execute("UPDATE loan_entities SET status = 'ACTIVE' WHERE id = 'L2'")  # TOASTed documents
    conn.execute(
        "INSERT INTO loan_payments (id, loan_id, amount, method) VALUES "
        "('P1', 'L1', 10.5, NULL), ('P2', 'L1', 20, 'card')"
    )
    conn.execute("UPDATE loan_payments SET status = 'SETTLED'")  # DEFAULT identity: no old row
    conn.execute("UPDATE loan_payments SET id = 'P2-moved' WHERE id = 'P2'")  # DEFAULT: key only
    conn.execute(
        "INSERT INTO service_records (id, car_id, service_type, cost, mileage, serviced_on, details) VALUES "
        "('S1', 'C2', 'oil', 99.99, 12000, '2024-02-29', '{\"a.b\": 1, \"a\": {\"b\": 2}}'), "
        "('S2', 'C3', 'tyres', NULL, NULL, NULL, NULL)"
    )
    conn.execute("UPDATE service_records SET mileage = mileage + 1, serviced_on = '2024-03-01'")
    conn.execute("DELETE FROM loan_payments")
    conn.execute("DELETE FROM service_records")
    conn.execute("DELETE FROM loan_entities")
    conn.execute("DELETE FROM car_entities WHERE id IN ('C2', 'C3', 'C4')")


def test_row_encoder_equals_the_generic_path_on_real_messages(
    pg_dsn: str, unique_name: Callable[[str], str]
) -> None:
    messages = capture_messages(pg_dsn, unique_name("fastreal").replace("-", "_"), _workload, TABLES, FULL)
    dec = PgOutputDecoder()
    rels = [r for _, b in messages if b[:1] == b"R" for r in [dec.decode(b)] if isinstance(r, Relation)]
    rows, changes = encoders(messages, shapes(pg_dsn, rels))
    enc = AvroEncoder(7)  # encoders() uses the wire prefix of schema id 7
    seen: Counter[str] = Counter()
    commit_ms = 1_765_000_000_000
    for lsn, buf in changes:
        ch = dec.decode(buf)
        assert isinstance(ch, Change)
        row_encoder = rows[ch.relation.oid]
        shape = row_encoder.shape
        change = RowChange(ch.operation, ch.new, ch.old, f"{lsn:X}:{shape.table}", commit_ms)
        args = (buf, lsn, encode_long(commit_ms), encode_long(commit_ms + 7))
        native = row_encoder.simple and (buf[0] == 73 or buf[5] == 79)
        if native:
            done = row_encoder.native.encode(*args)
            seen["native" if done is not None else "python walk"] += 1
        if moved_key(change, shape):
            seen["key moved"] += 1
            seen["unsent toast"] += any(v is UNCHANGED for v in (ch.new or {}).values())
            with pytest.raises(KeyMoved):
                row_encoder.encode(*args)
            continue
        event = normalize_row(change, shape, commit_ms + 7)
        assert row_encoder.encode(*args) == (event_key(event), enc.encode(event)), (shape.table, buf)
        seen[ch.operation] += 1
        seen["unsent toast"] += any(v is UNCHANGED for v in (ch.new or {}).values())
    # the workload reached every path the comparison is meant to cover
    assert seen["native"] > 80 and seen["python walk"] >= 1, seen
    assert seen["key moved"] >= 3 and seen["unsent toast"] >= 4, seen
    assert min(seen["INSERT"], seen["UPDATE"], seen["DELETE"]) > 0, seen
