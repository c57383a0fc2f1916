"""``cdcrouter bench capture``: the Debezium key reader against fastavro (the oracle), and one small
run of our engine on the real stack that must account for every change it made."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest

from cdcrouter.bench import capture as bench

KEY_SCHEMA = fastavro.parse_schema(
    {"type": "record", "name": "Key", "namespace": "x", "fields": [{"name": "id", "type": "string"}]}
)


@pytest.mark.parametrize("row_id", ["C1", "l0e2m17-3", "é" * 70, ""])
def test_debezium_key_reader_agrees_with_fastavro(row_id: str) -> None:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, KEY_SCHEMA, {"id": row_id})
    framed = b"\0" + (4711).to_bytes(4, "big") + buf.getvalue()  # Confluent wire format
    assert bench._avro_string_key(framed) == row_id


@pytest.mark.integration
@pytest.mark.stack_services("postgres", "kafka", "registry")
def test_a_run_of_our_engine_counts_every_change(stack: Any) -> None:
    out = bench.run_bench(
        stack.connections,
        changes=2000,
        warmup_changes=500,
        rate=400,
        latency_seconds=1.0,
        runs=1,
        engines=("cdcrouter",),
        report=lambda _m: None,
    )
    tp, lat = out["throughput"]["cdcrouter"], out["latency"]["cdcrouter"]
    assert tp["records_read"] == 2000 and tp["changes_per_s"] > 0 and tp["peak_rss_mb"] > 0
    assert lat["changes"] >= 400 and 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
