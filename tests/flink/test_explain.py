"""Every statement ``generate_sql`` writes for Apache Flink is planned by real Flink (EXPLAIN).

The script runs as deployed: the real source and sink DDL (Kafka connector, avro-confluent
format, placeholders filled with local endpoints) and the ``EXECUTE STATEMENT SET``, with the
connector jars on ``pipeline.jars``. Nothing is executed, so no broker is needed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from cdcrouter.backends.flink_check import FlinkCheckError, split_statements
from cdcrouter.filters import load_filters

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(
    [ROOT / "examples" / "filters.yaml", *(ROOT / "tests" / "fixtures" / "filters").glob("*.yaml")]
)

LOCAL_VALUES = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "SCHEMA_REGISTRY_URL": "http://127.0.0.1:8080/apis/ccompat/v7",
    "FLINK_GROUP_ID": "cdcrouter-flink",
    "SCAN_STARTUP_MODE": "group-offsets",
    "SINK_DELIVERY_GUARANTEE": "exactly-once",
    "SINK_TRANSACTIONAL_ID_PREFIX": "cdcrouter-flink",
}


def rendered_script(path: Path, sink_shape: str = "per-topic") -> str:
    from cdcrouter.backends.flink_sql import generate_sql, placeholders, render_placeholders

    script = generate_sql(load_filters(path), "flink", sink_shape=sink_shape)
    values = {name: LOCAL_VALUES.get(name, f"local-{name.lower()}") for name in placeholders(script)}
    return render_placeholders(script, values)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_generated_flink_sql_explains(flink_checker: Any, path: Path) -> None:
    script = rendered_script(path)
    statements = split_statements(script)
    plans = flink_checker.explain(statements)
    fs = load_filters(path)
    if fs.enabled():
        assert len(plans) == 1, "expected exactly one EXECUTE STATEMENT SET"
        plan = plans[0].plan
        # Every enabled filter's sink appears in the optimized plan: nothing was planned away.
        assert plan.count("Sink(table=") >= len({f.output_topic for f in fs.enabled()})
        assert "KafkaDynamicSink" in plan or "Sink(table=" in plan
    else:
        assert plans == []


def test_one_sink_shape_explains_to_a_single_sink(flink_checker: Any) -> None:
    """The examples' filters in the one-sink shape: one INSERT, and Flink plans exactly one sink
    (a statement set would plan one per INSERT) fed by every filter's branch."""
    path = ROOT / "examples" / "filters.yaml"
    plans = flink_checker.explain(split_statements(rendered_script(path, "one-sink")))
    assert len(plans) == 1
    plan = plans[0].plan
    sinks = set(re.findall(r"Sink\(table=\[([^\]]+)\]", plan))
    assert len(sinks) == 1 and sinks.pop().endswith(".routed_business_events"), plan[:2000]
    assert "Union(all=[true]" in plan
    for f in load_filters(path).enabled():  # every filter's branch names its own topic
        assert f"'{f.output_topic}' AS topic" in plan, f.id


def test_explain_rejects_broken_sql(flink_checker: Any) -> None:
    """The check can fail: a type error in a WHERE clause is caught at plan time, with Flink's reason."""
    script = rendered_script(ROOT / "examples" / "filters.yaml")
    broken = script.replace("WHERE ", "WHERE 1 + 'x' = 2 AND ", 1)
    assert broken != script
    with pytest.raises(FlinkCheckError) as info:
        flink_checker.explain(broken)
    assert "INSERT" in info.value.statement or "STATEMENT SET" in info.value.statement
    assert info.value.reason


def test_explain_rejects_unknown_connector(flink_checker: Any) -> None:
    with pytest.raises(FlinkCheckError, match="nope"):
        flink_checker.explain("CREATE TABLE t (a INT) WITH ('connector' = 'nope'); INSERT INTO t SELECT 1")


def test_split_statements_keeps_statement_sets_and_quotes() -> None:
    script = (
        "-- header; with a semicolon\n"
        "CREATE TABLE `a;b` (x STRING) WITH ('k' = 'v;''w');\n"
        "/* block; comment */\n"
        "EXECUTE STATEMENT SET\nBEGIN\nINSERT INTO t SELECT 'x;y';\nINSERT INTO u SELECT 1;\nEND;\n"
        "-- trailing comment only\n"
    )
    parts = split_statements(script)
    assert len(parts) == 2
    assert parts[0].endswith("WITH ('k' = 'v;''w')")
    assert parts[1].startswith("/* block; comment */\nEXECUTE STATEMENT SET")
    assert parts[1].endswith("END")
