"""The Flink SQL back end: structure, quoting, placeholders and dialect differences."""

from __future__ import annotations

import re

import pytest

from cdcrouter.backends.flink_check import split_statements
from cdcrouter.backends.flink_sql import (
    GenerateError,
    SqlGenerator,
    content_hash,
    generate_sql,
    placeholders,
    quote_string,
    render_placeholders,
    sink_tables,
    where_clause,
)
from cdcrouter.backends.python_eval import PyCodegen
from cdcrouter.filters import load_filters_text
from cdcrouter.ir.nodes import EXPRESSION_CLASSES


def fs_of(conditions: str, topic: str = "t-out") -> object:
    return load_filters_text(
        f"filters:\n  - id: f\n    consumerId: c\n    outputTopic: {topic}\n    conditions:\n{conditions}",
        "x.yaml",
    )


def where(conditions: str) -> str:
    return where_clause(fs_of(conditions).filters[0])  # type: ignore[attr-defined]


def test_every_ir_expression_has_a_handler_in_both_back_ends() -> None:
    table = SqlGenerator.dispatch_table()
    assert set(table) == set(EXPRESSION_CLASSES)
    gen = PyCodegen()
    assert all(hasattr(gen, f"{cls.key}_py") for cls in EXPRESSION_CLASSES)


def test_indexes_are_one_based_and_attributes_are_map_access() -> None:
    field = "eventBody.entities[0].updatedAttributes.loan.loanAmount"
    sql = where(f"      - {{field: '{field}', operator: greaterThan, value: 5}}\n")
    assert sql == (
        "TRY_CAST(`eventBody`.`entities`[1].`updatedAttributes`['loan.loanAmount'] AS DECIMAL(38, 10)) > 5"
    )


def test_reserved_words_are_quoted() -> None:
    assert (
        where("      - {field: sourceMetadata.table, operator: equals, value: t}\n")
        == "`sourceMetadata`.`table` = 't'"
    )


def test_matches_is_regexp_with_the_java_rendering() -> None:
    sql = where("      - {field: eventHeader.eventName, operator: matches, value: '^L.an$'}\n")
    assert sql == "REGEXP(`eventHeader`.`eventName`, '^L.an\\z')"


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("it's", "'it''s'"),
        ("a\\b", "'a\\b'"),  # backslash is not an escape in Flink SQL strings
        ("x'); DROP TABLE t; --", "'x''); DROP TABLE t; --'"),
        ("two\nlines", "U&'two\\000Alines'"),
        ("back\\slash\n", "U&'back\\\\slash\\000A'"),
    ],
)
def test_literals_cannot_break_out(value: str, literal: str) -> None:
    assert quote_string(value) == literal


def test_injection_attempt_stays_one_literal() -> None:
    script = generate_sql(
        fs_of('      - {field: eventHeader.eventName, operator: equals, value: "x\'); DROP TABLE t; --"}\n')
    )
    stmts = split_statements(script)
    words = [re.sub(r"^(\s*--[^\n]*\n)*", "", s).split()[0] for s in stmts]
    assert words == ["CREATE", "CREATE", "EXECUTE"]
    assert "DROP TABLE" not in re.sub(r"'(?:[^']|'')*'", "''", stmts[-1])  # only inside a literal


def test_one_statement_set_reads_the_source_once() -> None:
    text = "filters:\n" + "".join(
        f"  - {{id: f{i}, consumerId: c, outputTopic: t{i}, conditions: [{{field: eventHeader.eventName, "
        f"operator: equals, value: E{i}}}]}}\n"
        for i in range(3)
    )
    script = generate_sql(load_filters_text(text, "x.yaml"))
    assert script.count("EXECUTE STATEMENT SET") == 1 and script.count("INSERT INTO") == 3
    assert script.count("CREATE TABLE IF NOT EXISTS `raw_business_events`") == 1
    assert "'connector' = 'kafka'" in script and "'value.format' = 'avro-confluent'" in script
    assert "'key.fields' = 'kafka_key'" in script and "`entities`[1].`entityId` AS `kafka_key`" in script
    assert "UNIX_TIMESTAMP" not in script and "CURRENT_ROW_TIMESTAMP() AS `_routed_at`" in script


def test_one_sink_shape_is_one_insert_into_one_sink_listing_every_topic() -> None:
    """Rows name their topic; the sink's 'topic' option is the allow list the connector enforces."""
    text = "filters:\n" + "".join(
        f"  - {{id: f{i}, consumerId: c{i}, outputTopic: t{2 - i}, "
        f"conditions: [{{field: eventHeader.eventName, operator: equals, value: E{i}}}]}}\n"
        for i in range(3)
    )
    script = generate_sql(load_filters_text(text, "x.yaml"), sink_shape="one-sink")
    stmts = split_statements(script)
    created = re.findall(r"CREATE TABLE IF NOT EXISTS `(\w+)`", script)
    assert created == ["raw_business_events", "routed_business_events"]
    assert len(stmts) == 3 and "EXECUTE STATEMENT SET" not in script
    assert script.count("INSERT INTO") == 1 and script.count("UNION ALL") == 2
    assert "`kafka_topic` STRING NOT NULL METADATA FROM 'topic'" in script
    assert "'topic' = 't0;t1;t2'" in script and "'value.avro-confluent.subject' = 't0-value'" in script
    branches = stmts[2].split("UNION ALL")
    for i, branch in enumerate(branches):  # each filter's rows carry its own topic and metadata
        assert f"ROW('f{i}', 'c{i}', " in branch and f"WHERE `eventHeader`.`eventName` = 'E{i}'" in branch
        assert f"'t{2 - i}' AS `kafka_topic`" in branch
    assert "-- sink-shape: one-sink" in script
    assert generate_sql(load_filters_text(text, "x.yaml")) != script  # the default stays per-topic


def test_one_sink_shape_is_for_apache_flink_only() -> None:
    fs = fs_of("      - {field: eventHeader.eventName, operator: equals, value: E}\n")
    with pytest.raises(GenerateError, match="Apache Flink only"):
        generate_sql(fs, "confluent-cloud", sink_shape="one-sink")
    with pytest.raises(GenerateError, match="unknown sink shape"):
        generate_sql(fs, sink_shape="many")


def test_confluent_cloud_dialect_has_no_connector_options() -> None:
    script = generate_sql(
        fs_of("      - {field: eventHeader.eventName, operator: equals, value: E}\n"), "confluent-cloud"
    )
    assert "'connector'" not in script and "bootstrap" not in script and "PROCTIME" not in script
    assert "CREATE TABLE IF NOT EXISTS `t-out`" in script and "DISTRIBUTED BY HASH(`kafka_key`)" in script
    assert "INSERT INTO `t-out`" in script and "FROM `raw-business-events`" in script


def test_header_names_the_source_and_hashes_the_content() -> None:
    script = generate_sql(fs_of("      - {field: eventHeader.eventName, operator: equals, value: E}\n"))
    assert script.startswith("-- Generated by cdcrouter") and "from x.yaml" in script.splitlines()[0]
    body = script.split("\n\n", 1)[1]
    import hashlib

    assert content_hash(script) == hashlib.sha256(body.encode()).hexdigest()


def test_no_credentials_only_placeholders() -> None:
    script = generate_sql(fs_of("      - {field: eventHeader.eventName, operator: equals, value: E}\n"))
    assert placeholders(script) == [
        "FLINK_GROUP_ID",
        "KAFKA_BOOTSTRAP_SERVERS",
        "SCAN_STARTUP_MODE",
        "SCHEMA_REGISTRY_URL",
        "SINK_DELIVERY_GUARANTEE",
    ]
    assert "password" not in script.lower() and "sasl" not in script.lower()


def test_render_placeholders_fills_values_and_defaults_and_fails_on_missing() -> None:
    sql = "a='${KAFKA_BOOTSTRAP_SERVERS}' b='${SCAN_STARTUP_MODE:-group-offsets}' c='${SCHEMA_REGISTRY_URL}'"
    with pytest.raises(GenerateError) as err:
        render_placeholders(sql, {"KAFKA_BOOTSTRAP_SERVERS": "k:9092"})
    assert "${SCHEMA_REGISTRY_URL}" in err.value.message and "KAFKA" not in err.value.message
    out = render_placeholders(sql, {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "SCHEMA_REGISTRY_URL": "http://r'x"})
    assert out == "a='k:9092' b='group-offsets' c='http://r''x'"


def test_entities_star_is_unrolled_with_cardinality_guards() -> None:
    sql = where("      - {field: 'eventBody.entities[*].entityType', operator: equals, value: Car}\n")
    assert sql.count("CARDINALITY(`eventBody`.`entities`) >=") == 10
    first = "(`eventBody`.`entities`[1].`entityType` = 'Car') IS TRUE"
    assert f"(CARDINALITY(`eventBody`.`entities`) >= 1 AND {first})" in sql


def test_clashing_table_names_get_a_suffix() -> None:
    tables = sink_tables(["a.b", "a-b", "a_b"])
    assert tables["a.b"] == "a_b" and len(set(tables.values())) == 3


def test_unknown_target() -> None:
    with pytest.raises(GenerateError):
        generate_sql(fs_of("      - {field: eventHeader.eventName, operator: isNull}\n"), "spark")  # type: ignore[arg-type]


def test_a_file_name_cannot_end_the_header_comment() -> None:
    fs = load_filters_text(
        "filters:\n  - {id: f, consumerId: c, outputTopic: t, conditions: "
        "[{field: eventHeader.eventType, operator: isNull}]}\n",
        "evil\nDROP TABLE x;.yaml",
    )
    script = generate_sql(fs)
    assert not any(line.startswith("DROP") for line in script.splitlines())
    from cdcrouter.backends.python_eval import compile_filterset

    assert compile_filterset(fs).match is not None  # the generated Python still compiles


def test_split_statements_keeps_a_case_expression_inside_a_statement_set() -> None:
    """A CASE ... END (the ISO reading of a timestamp test) must not close the statement set early."""
    from cdcrouter.deploy.sql_gateway import split_statements as gateway_split

    script = (
        "CREATE TABLE t (x STRING);\n"
        "EXECUTE STATEMENT SET\nBEGIN\n"
        "INSERT INTO u SELECT x FROM t WHERE CASE WHEN x = 'a' THEN 1 END = 1;\n"
        "INSERT INTO v SELECT x FROM t;\nEND;\n"
    )
    for split in (split_statements, gateway_split):
        parts = split(script)
        assert len(parts) == 2, parts
        assert parts[1].startswith("EXECUTE STATEMENT SET") and parts[1].endswith("END")
