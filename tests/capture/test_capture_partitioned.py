"""Partitioned tables: every change of every partition is captured under the root table."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from capture_helpers import CaptureRun, make_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.pg_versions()]  # on 15 and 18

PARTITIONS = {
    "list": (
        "PARTITION BY LIST (k)",
        "text",
        ["FOR VALUES IN ('eu')", "FOR VALUES IN ('us')"],
        ("eu", "us"),
    ),
    "range": (
        "PARTITION BY RANGE (k)",
        "int",
        ["FOR VALUES FROM (0) TO (100)", "FOR VALUES FROM (100) TO (200)"],
        ("1", "150"),
    ),
    "hash": (
        "PARTITION BY HASH (k)",
        "int",
        ["FOR VALUES WITH (MODULUS 2, REMAINDER 0)", "FOR VALUES WITH (MODULUS 2, REMAINDER 1)"],
        None,  # found below: one value per partition
    ),
}


def _summary(events: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for e in events:
        ent = e["eventBody"]["entities"][0]
        assert e["sourceMetadata"]["table"] == "orders"
        assert ent["entityType"] == "Order"
        out.append((e["sourceMetadata"]["operation"], ent["entityId"], ent["updatedAttributes"]))
    return out


def _hash_values(run: CaptureRun) -> tuple[str, str]:
    with psycopg.connect(run.conns.postgres.conninfo()) as conn:
        rel = f'"{run.schema}".orders'
        a = conn.execute(
            "SELECT k FROM generate_series(1, 50) k WHERE satisfies_hash_partition(%s::regclass, 2, 0, k)"
            " LIMIT 1",
            (rel,),
        ).fetchone()
        b = conn.execute(
            "SELECT k FROM generate_series(1, 50) k WHERE satisfies_hash_partition(%s::regclass, 2, 1, k)"
            " LIMIT 1",
            (rel,),
        ).fetchone()
    assert a and b
    return str(a[0]), str(b[0])


@pytest.mark.parametrize("kind", ["list", "range", "hash"])
def test_every_change_of_a_partitioned_table_is_captured_under_the_root(
    capture_run: CaptureRun, kind: str
) -> None:
    run = capture_run
    how, k_type, bounds, values = PARTITIONS[kind]
    run.sql(
        f"CREATE TABLE orders (id int NOT NULL, k {k_type} NOT NULL, amount int, PRIMARY KEY (id, k)) {how}",
        *(f"CREATE TABLE orders_{i} PARTITION OF orders {b}" for i, b in enumerate(bounds)),
    )
    a, b = values or _hash_values(run)
    lit = (lambda v: f"'{v}'") if k_type == "text" else str
    run.pipeline = make_pipeline(
        run.schema, run.topic.removeprefix("raw-"), tables={"orders": {"entity_id": "id"}}
    )
    if kind == "list":  # a publication an earlier version created, without publish_via_partition_root
        run.sql(f'CREATE PUBLICATION "{run.pipeline.replication.publication}" FOR TABLE orders')
    run.sql(f"INSERT INTO orders VALUES (1, {lit(a)}, 10), (2, {lit(b)}, 20)")
    run.start()
    run.sql(f"INSERT INTO orders VALUES (3, {lit(a)}, 30), (4, {lit(b)}, 40)")
    run.sql("UPDATE orders SET amount = 31 WHERE id = 3")
    run.sql(f"UPDATE orders SET k = {lit(b)} WHERE id = 1")  # moves the row to the other partition
    run.sql("DELETE FROM orders WHERE id = 2")
    got = _summary(run.events(expect=8))
    assert got == [
        ("SNAPSHOT", "1", {"id": "1", "k": a, "amount": "10"}),
        ("SNAPSHOT", "2", {"id": "2", "k": b, "amount": "20"}),
        ("INSERT", "3", {"id": "3", "k": a, "amount": "30"}),
        ("INSERT", "4", {"id": "4", "k": b, "amount": "40"}),
        ("UPDATE", "3", {"id": "3", "amount": "31"}),
        # PostgreSQL decodes a cross-partition UPDATE as a DELETE and an INSERT (docs/capture.md)
        ("DELETE", "1", {"id": "1", "k": a, "amount": "10"}),
        ("INSERT", "1", {"id": "1", "k": b, "amount": "10"}),
        ("DELETE", "2", {"id": "2", "k": b, "amount": "20"}),
    ]


def test_a_partition_created_while_capture_runs_is_captured_and_unknown_tables_are_counted(
    capture_run: CaptureRun,
) -> None:
    run = capture_run
    run.sql(
        "CREATE TABLE orders (id int PRIMARY KEY, amount int) PARTITION BY RANGE (id)",
        "CREATE TABLE orders_0 PARTITION OF orders FOR VALUES FROM (0) TO (100)",
        "CREATE TABLE stranger (id int PRIMARY KEY)",
    )
    run.pipeline = make_pipeline(run.schema, run.topic.removeprefix("raw-"), tables={"orders": {}})
    engine = run.start()
    lines: list[str] = []
    engine.progress = lines.append
    run.sql(
        "CREATE TABLE orders_1 PARTITION OF orders FOR VALUES FROM (100) TO (200)",
        "INSERT INTO orders VALUES (150, 1)",
    )
    # a table someone added to the publication by hand: not captured, but never skipped silently
    run.sql(f'ALTER PUBLICATION "{run.pipeline.replication.publication}" ADD TABLE stranger')
    run.sql("INSERT INTO stranger VALUES (1), (2)")
    run.sql("UPDATE orders SET amount = 2 WHERE id = 150")
    got = _summary(run.events(expect=2))
    assert got == [
        ("INSERT", "150", {"id": "150", "amount": "1"}),
        ("UPDATE", "150", {"id": "150", "amount": "2"}),
    ]
    assert engine.stats.unknown_relation_changes == 2
    assert engine.metrics.registry.get_sample_value("cdcrouter_capture_unknown_relation_changes_total") == 2
    unknown = [line for line in lines if "does not capture" in line]
    assert len(unknown) == 1 and f"{run.schema}.stranger" in unknown[0], lines  # partitions are known


def test_a_sub_partitioned_table_is_captured_under_the_top_root(capture_run: CaptureRun) -> None:
    run = capture_run
    run.sql(
        "CREATE TABLE orders (id int NOT NULL, y int NOT NULL, k text NOT NULL, amount int, "
        "PRIMARY KEY (id, y, k)) PARTITION BY RANGE (y)",
        "CREATE TABLE orders_2024 PARTITION OF orders FOR VALUES FROM (2024) TO (2025) PARTITION BY LIST (k)",
        "CREATE TABLE orders_2024_eu PARTITION OF orders_2024 FOR VALUES IN ('eu')",
        "CREATE TABLE orders_2024_us PARTITION OF orders_2024 FOR VALUES IN ('us')",
    )
    run.pipeline = make_pipeline(
        run.schema, run.topic.removeprefix("raw-"), tables={"orders": {"entity_id": "id"}}
    )
    run.start()
    run.sql("INSERT INTO orders VALUES (1, 2024, 'eu', 10)")
    run.sql("UPDATE orders SET amount = 11 WHERE id = 1")
    run.sql("DELETE FROM orders WHERE id = 1")
    assert _summary(run.events(expect=3)) == [
        ("INSERT", "1", {"id": "1", "y": "2024", "k": "eu", "amount": "10"}),
        ("UPDATE", "1", {"id": "1", "amount": "11"}),  # FULL identity reached the leaf
        ("DELETE", "1", {"id": "1", "y": "2024", "k": "eu", "amount": "11"}),
    ]
