"""``cdcrouter bench capture``: the Debezium key reader against fastavro (the oracle), the warm-up's
stopping rule, and small runs of our engine and of the Debezium anchor on the real stack that must
account for every change they made."""

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


@pytest.mark.parametrize(
    ("trace", "settled"),
    [
        ([{"a": 100.0}], False),  # one round proves nothing
        ([{"a": 100.0}, {"a": 55.0}], False),  # still falling: the JIT is not done
        ([{"a": 55.0}, {"a": 52.0}], True),
        ([{"a": 55.0}, {"a": 60.0}], True),  # noise upwards is settled too
        ([{"a": 55.0, "b": 9.0}, {"a": 54.0, "b": 7.0}], False),  # every engine must settle
        ([{"a": None, "b": 9.0}, {"a": 40.0, "b": 9.0}], True),  # no figure: nothing to compare
    ],
)
def test_warm_up_stops_once_cpu_per_change_stops_falling(trace: list, settled: bool) -> None:
    assert bench._settled(trace) is settled


@pytest.mark.integration
@pytest.mark.stack_services("postgres", "kafka", "registry")
@pytest.mark.parametrize(
    ("engine", "rows"),
    [
        ("cdcrouter", {"cdcrouter": "registry (magic 0)"}),
        # Debezium on its own Connect worker (the stack's worker settings), a connector per format
        ("debezium-alo", {"debezium-alo": "registry (magic 0)", "debezium-alo-json": "other"}),
    ],
)
def test_a_run_counts_every_change(
    stack: Any, engine: str, rows: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each engine end to end on the real stack; every change is counted by reading the topic.
    Debezium's warm-up stops after 2 rounds (its CPU per change kept falling for all 5 rounds of
    500: ~2 s a round per format); the stopping rule is tested on its own above."""
    if engine != "cdcrouter":
        monkeypatch.setattr(bench, "WARMUP_MAX_ROUNDS", 2)
    out = bench.run_bench(
        stack.connections,
        changes=2000,
        warmup_changes=500,
        rate=400,
        latency_seconds=1.0,
        runs=1,
        engines=(engine,),
        debezium_format="both",
        report=lambda _m: None,
    )
    assert set(out["throughput"]) == set(rows)
    for name, value_format in rows.items():
        tp, lat = out["throughput"][name], out["latency"][name]
        assert tp["records_read"] == 2000 and tp["changes_per_s"] > 0 and tp["peak_rss_mb"] > 0
        assert tp["cpu_us_per_change"] > 0 and tp["value_format"] == value_format
        # the steady window (first record readable -> last) lies inside the drain from the slot's start
        assert tp["start_s"] >= 0 and tp["drain_s"] >= tp["start_s"]
        assert lat["changes"] >= 400 and 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert len(out["warmup"]) >= 2  # the warm-up ran its rounds, each through every engine
    assert all(set(round_) == set(rows) for round_ in out["warmup"]), out["warmup"]


@pytest.mark.parametrize(
    ("ticks", "sched", "cpu_s"),
    [
        ((5.0, 5.0), ((1.0, 0.0), (1.004, 0.0)), 0.004),  # under one 10 ms tick: the scheduler's ns
        ((5.0, 7.5), ((1.0, 0.0), (3.4, 0.0)), 2.5),  # a second or more: ticks (they keep dead threads)
        ((5.0, 5.01), ((1.0, 0.0), (0.5, 0.0)), 0.01),  # a thread ended in the window: ticks
        ((5.0, 5.0), (None, None), 0.0),  # no scheduler figures: ticks
    ],
)
def test_window_cpu_reads_below_the_tick(ticks: tuple, sched: tuple, cpu_s: float) -> None:
    assert bench._window_cpu_s(ticks, sched) == pytest.approx(cpu_s)
