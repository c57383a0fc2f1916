"""IR -> Flink SQL, for Apache Flink and for Confluent Cloud for Apache Flink.

One generator with one ``<node_key>_sql`` method per IR expression class; the dispatch table is
built once per class and a missing handler raises. A dialect overrides only what differs (DDL).

Semantics chosen to match the embedded engine exactly (see docs/filter-language.md):
number tests use ``TRY_CAST(x AS DECIMAL(38, 10))`` (a bad value reads NULL, never fails the job),
YAML's 0-based indexes become SQL's 1-based ones, ``updatedAttributes`` is map access,
``matches`` is ``REGEXP`` with the Java rendering of the portable pattern, ``entities[*]`` is
unrolled over the first ``limit`` entities (Flink 2.2 cannot plan a subquery over UNNEST), and
``filterMetadata.filteredAt`` is epoch milliseconds computed independently of the session time
zone. Literals are single-quoted with ``''`` for a quote; a backslash is an ordinary character in
Flink SQL strings, so no value can end the literal early. Connection settings are ``${NAME}``
placeholders, filled in at deploy time by :func:`render_placeholders`; nothing secret is written.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import cache
from typing import Any, ClassVar

from cdcrouter import __version__
from cdcrouter.backends import sqlsem
from cdcrouter.errors import CdcrouterError
from cdcrouter.filters.schema import FILTERED_SCHEMA, RAW_SCHEMA, load_schema
from cdcrouter.ir.nodes import (
    DECIMAL_PRECISION,
    DECIMAL_SCALE,
    EXPRESSION_CLASSES,
    And,
    AnyEntity,
    Attr,
    Between,
    Compare,
    FieldRef,
    Filter,
    FilterSet,
    Index,
    InList,
    IsNull,
    Key,
    Literal,
    Node,
    Not,
    Or,
    RegexMatch,
    TryCast,
)
from cdcrouter.ir.passes import drop_disabled, flatten_logic
from cdcrouter.naming import DEFAULT_RAW_TOPIC

TARGETS = ("flink", "confluent-cloud")
# per-topic: one sink table per output topic (one Kafka writer per topic and subtask).
# one-sink: one sink table whose rows name their topic (the Kafka connector's writable `topic`
# metadata, the topics listed in its 'topic' option as the allow list); Apache Flink only.
SINK_SHAPES = ("per-topic", "one-sink")
RAW_TOPIC = DEFAULT_RAW_TOPIC
RAW_TABLE = "raw_business_events"
ROUTED_TABLE = "routed_business_events"
TOPIC_COLUMN = "kafka_topic"
KEY_COLUMN = "kafka_key"
PASSES = (drop_disabled, flatten_logic)

# Epoch milliseconds of the routing time, independent of table.local-time-zone and valid past
# 2038 (TIMESTAMPDIFF returns INT: whole minutes overflow only in year 6053). Checked on Flink
# 2.2.1 against TO_TIMESTAMP_LTZ(x, 3) for x up to 2049 in UTC, +05:30, -03:30 and +05:45.
# CURRENT_ROW_TIMESTAMP() is computed once per row in a subquery (the planner keeps that Calc
# apart, verified with EXPLAIN), so the minute, second and millisecond parts cannot straddle a
# boundary.
ROUTED_AT = "_routed_at"
FILTERED_AT_SQL = (
    f"CAST(TIMESTAMPDIFF(MINUTE, TO_TIMESTAMP_LTZ(0, 3), `{ROUTED_AT}`) AS BIGINT) * 60000"
    f" + EXTRACT(SECOND FROM `{ROUTED_AT}`) * 1000 + EXTRACT(MILLISECOND FROM `{ROUTED_AT}`)"
)

_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::-([^}]*))?\}")


class GenerateError(CdcrouterError):
    """The IR holds something this back end cannot express (a ``B`` diagnostic)."""


def quote_ident(name: str) -> str:
    """Back-quote an identifier (``table`` and ``timestamp`` are reserved words)."""
    return "`" + name.replace("`", "``") + "`"


def quote_string(value: str) -> str:
    """A SQL string literal: ``'`` doubled. Backslashes need nothing (not an escape in Flink SQL).

    Control characters and line separators are written as ``U&'\\XXXX'`` escapes so the script
    stays one statement per line and survives any transport unchanged.
    """
    if _NEEDS_U_ESCAPE.search(value):
        parts = []
        for c in value:
            if c == "\\":
                parts.append("\\\\")
            elif c == "'":
                parts.append("''")
            elif _needs_unicode_escape(c):
                parts.append(f"\\{ord(c):04X}")
            else:
                parts.append(c)
        return "U&'" + "".join(parts) + "'"
    return "'" + value.replace("'", "''") + "'"


_NEEDS_U_ESCAPE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _needs_unicode_escape(c: str) -> bool:
    return _NEEDS_U_ESCAPE.match(c) is not None


def decimal_sql(value: Decimal | int) -> str:
    """An exact numeric literal without exponent (``1E3`` would be a DOUBLE in SQL)."""
    d = Decimal(value)
    text = format(d, "f")
    return f"({text})" if text.startswith("-") else text


def timestamp_ms_sql(x: str) -> str:
    """Epoch ms as DECIMAL(38, 10) of STRING ``x`` read as ISO-8601 text, else NULL: the SQL form of
    ``sqlsem.parse_iso_timestamp_ms``, independent of the session time zone.

    The regex admits exactly the documented form (year 0000 excluded by a look-ahead); the date
    is Flink's strict, proleptic Gregorian ``CAST(... AS DATE)`` (NULL for February 30) counted
    in days from 1970 by ``TIMESTAMPDIFF``; hours, minutes, seconds and the offset are digits.
    ``x`` occurs nine times (35 in the former all-arithmetic form): Flink plans and compiles
    every occurrence separately, and a timestamp test's planning time grew with them."""

    def digits(start: int, length: int) -> str:
        return f"TRY_CAST(SUBSTR({x}, {start}, {length}) AS BIGINT)"

    def zone(group: str) -> str:  # NULL for Z
        return f"REGEXP_EXTRACT({x}, '{group}\\z', 1)"

    days = f"CAST(TIMESTAMPDIFF(DAY, DATE '1970-01-01', TRY_CAST(SUBSTR({x}, 1, 10) AS DATE)) AS BIGINT)"
    # +HH:MM / -HH:MM as signed minutes: the sign goes on both parts ('-00:30' is -30)
    signed_minutes = f"CONCAT({zone('([+-])[0-9]{2}:[0-9]{2}')}, {zone('[+-][0-9]{2}:([0-9]{2})')})"
    offset = (
        f"COALESCE(TRY_CAST({zone('([+-][0-9]{2}):[0-9]{2}')} AS BIGINT) * 60"
        f" + TRY_CAST({signed_minutes} AS BIGINT), 0)"
    )
    seconds = f"(({days} * 24 + {digits(12, 2)}) * 60 + {digits(15, 2)} - {offset}) * 60 + {digits(18, 2)}"
    fraction = (
        f"TRY_CAST(CONCAT('0.', COALESCE(REGEXP_EXTRACT({x}, '\\.([0-9]+)', 1), '0')) AS DECIMAL(10, 9))"
    )
    pattern = quote_string("^(?!0000)" + sqlsem.ISO_TIMESTAMP_REGEX + "\\z")
    return (
        f"CASE WHEN REGEXP({x}, {pattern})"
        f" THEN CAST(({seconds}) * 1000 + {fraction} * 1000 AS DECIMAL({DECIMAL_PRECISION}, {DECIMAL_SCALE}))"
        " END"
    )


def literal_sql(lit: Literal) -> str:
    if lit.type in ("decimal", "long"):
        return decimal_sql(lit.value)  # type: ignore[arg-type]
    return quote_string(str(lit.value))


def table_name_for(topic: str) -> str:
    """The Flink table name for a topic in the Apache Flink dialect (``-``/``.`` -> ``_``)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", topic)


# ---- types from the Avro contract ---------------------------------------------------------------


def avro_to_flink(t: Any, *, all_nullable: bool) -> str:
    """Flink SQL type for an Avro type; ``all_nullable`` drops every NOT NULL.

    The source table must be all-nullable: with NOT NULL nested fields the planner folds
    ``entities[9].entityType IS NULL`` to FALSE although an out-of-range index reads NULL.
    """
    nullable = False
    if isinstance(t, list):
        rest = [x for x in t if x != "null"]
        nullable = len(rest) != len(t)
        t = rest[0]
    nn = "" if (nullable or all_nullable) else " NOT NULL"
    if isinstance(t, str):
        return {"string": "STRING", "long": "BIGINT", "int": "INT", "boolean": "BOOLEAN"}[t] + nn
    kind = t["type"]
    if kind == "record":
        inner = ", ".join(
            f"{quote_ident(f['name'])} {avro_to_flink(f['type'], all_nullable=all_nullable)}"
            for f in t["fields"]
        )
        return f"ROW<{inner}>{nn}"
    if kind == "array":
        return f"ARRAY<{avro_to_flink(t['items'], all_nullable=all_nullable)}>{nn}"
    if kind == "map":
        key = "STRING" if all_nullable else "STRING NOT NULL"
        return f"MAP<{key}, {avro_to_flink(t['values'], all_nullable=all_nullable)}>{nn}"
    raise GenerateError(f"Avro type {kind!r} has no Flink mapping")


@cache
def _columns(schema_name: str, *, all_nullable: bool) -> list[str]:
    schema = load_schema(schema_name)
    return [
        f"  {quote_ident(f['name'])} {avro_to_flink(f['type'], all_nullable=all_nullable)}"
        for f in schema["fields"]
    ]


# ---- expressions --------------------------------------------------------------------------------


class SqlGenerator:
    """Renders IR expressions as Flink SQL; identical in both dialects."""

    _dispatch: ClassVar[dict[type[Node], Callable[[SqlGenerator, Any], str]]]

    def __init_subclass__(cls, **kw: Any) -> None:
        cls._dispatch = {}

    @classmethod
    def dispatch_table(cls) -> dict[type[Node], Callable[[SqlGenerator, Any], str]]:
        if not getattr(cls, "_dispatch", None):
            table = {}
            for node_cls in EXPRESSION_CLASSES:
                handler = getattr(cls, f"{node_cls.key}_sql", None)
                if handler is None:
                    raise GenerateError(f"B001 no SQL handler for IR node {node_cls.__name__}")
                table[node_cls] = handler
            cls._dispatch = table
        return cls._dispatch

    def __init__(self) -> None:
        self.entity_sql: str | None = None  # the entity element while inside AnyEntity

    def sql(self, node: Node) -> str:
        handler = self.dispatch_table().get(type(node))
        if handler is None:
            return self.unsupported(node, "not an expression")
        return handler(self, node)

    def unsupported(self, node: Node, why: str) -> str:
        raise GenerateError(
            f"{node.span} B002 cannot express {type(node).__name__} in SQL: {why}",
            hint="this is a compiler bug; please report it with the filters file",
        )

    def field_ref_sql(self, n: FieldRef) -> str:
        if n.root == "entity":
            if self.entity_sql is None:
                return self.unsupported(n, "entity field outside entities[*]")
            out = self.entity_sql
        else:
            out = ""
        for step in n.steps:
            if isinstance(step, Attr):
                out = f"{out}.{quote_ident(step.name)}" if out else quote_ident(step.name)
            elif isinstance(step, Index):
                out = f"{out}[{step.index + 1}]"
            elif isinstance(step, Key):
                out = f"{out}[{quote_string(step.key)}]"
        return out

    def literal_sql(self, n: Literal) -> str:
        return literal_sql(n)

    def try_cast_sql(self, n: TryCast) -> str:
        if n.to not in ("decimal", "timestamp"):
            return self.unsupported(n, f"cast to {n.to}")
        target = f"DECIMAL({DECIMAL_PRECISION}, {DECIMAL_SCALE})"
        if isinstance(n.operand, FieldRef) and n.operand.type == "long":
            return f"CAST({self.sql(n.operand)} AS {target})"  # every BIGINT fits: cannot fail
        x = self.sql(n.operand)
        if n.to == "timestamp":  # epoch-ms text, else ISO-8601 text (the two never overlap)
            return f"COALESCE(TRY_CAST({x} AS {target}), {timestamp_ms_sql(x)})"
        return f"TRY_CAST({x} AS {target})"

    def compare_sql(self, n: Compare) -> str:
        return f"{self.sql(n.left)} {n.op} {self.sql(n.right)}"

    def in_list_sql(self, n: InList) -> str:
        values = ", ".join(self.sql(v) for v in n.values)
        return f"{self.sql(n.operand)} {'NOT IN' if n.negated else 'IN'} ({values})"

    def between_sql(self, n: Between) -> str:
        return f"{self.sql(n.operand)} BETWEEN {self.sql(n.low)} AND {self.sql(n.high)}"

    def regex_match_sql(self, n: RegexMatch) -> str:
        return f"REGEXP({self.sql(n.operand)}, {quote_string(n.java)})"

    def is_null_sql(self, n: IsNull) -> str:
        return f"{self.sql(n.operand)} IS {'NOT ' if n.negated else ''}NULL"

    def _group(self, n: And | Or, word: str) -> str:
        return "(" + f" {word} ".join(self._operand(o) for o in n.operands) + ")"

    def _operand(self, n: Node) -> str:
        s = self.sql(n)
        return s if isinstance(n, (And, Or, Not, AnyEntity)) else f"({s})"

    def and_sql(self, n: And) -> str:
        return self._group(n, "AND")

    def or_sql(self, n: Or) -> str:
        return self._group(n, "OR")

    def not_sql(self, n: Not) -> str:
        return f"(NOT {self._operand(n.operand)})"

    def any_entity_sql(self, n: AnyEntity) -> str:
        if self.entity_sql is not None:
            return self.unsupported(n, "nested entities[*]")
        array = f"{quote_ident('eventBody')}.{quote_ident('entities')}"
        terms = []
        try:
            for k in range(1, n.limit + 1):
                self.entity_sql = f"{array}[{k}]"
                terms.append(f"(CARDINALITY({array}) >= {k} AND ({self.sql(n.predicate)}) IS TRUE)")
        finally:
            self.entity_sql = None
        return "(" + " OR ".join(terms) + ")"


def where_clause(filter: Filter, *, indent: str | None = None) -> str:
    """The boolean SQL for one filter over columns eventHeader, eventBody, sourceMetadata.

    With ``indent``, the top-level AND/OR operands go on lines of their own (for scripts people
    review); without it the result is one line.
    """
    gen = SqlGenerator()
    cond = flatten_logic(filter.condition)
    if indent is not None and isinstance(cond, (And, Or)):
        word = "AND" if isinstance(cond, And) else "OR"
        return f"\n{indent}{word} ".join(gen._operand(o) for o in cond.operands)
    return gen.sql(cond)


# ---- DDL and scripts ----------------------------------------------------------------------------


def raw_table_ddl(target: str = "flink", table: str = RAW_TABLE, topic: str = RAW_TOPIC) -> str:
    """Source table DDL for the raw topic (Apache Flink dialect; Confluent Cloud has it already).

    Every column is nullable on purpose (see :func:`avro_to_flink`).
    """
    _check_target(target)
    if target == "confluent-cloud":
        return (
            f"-- Confluent Cloud exposes topic {topic!s} as table {quote_ident(topic)} "
            "from its registered schema; no DDL needed."
        )
    cols = ",\n".join(_columns(RAW_SCHEMA, all_nullable=True))
    opts = _with(
        {
            "connector": "kafka",
            "topic": topic,
            "properties.bootstrap.servers": "${KAFKA_BOOTSTRAP_SERVERS}",
            "properties.group.id": "${FLINK_GROUP_ID:-cdcrouter-flink}",
            "properties.isolation.level": "read_committed",
            "scan.startup.mode": "${SCAN_STARTUP_MODE:-group-offsets}",
            "properties.auto.offset.reset": "earliest",
            "value.format": "avro-confluent",
            "value.avro-confluent.url": "${SCHEMA_REGISTRY_URL}",
        }
    )
    return f"CREATE TABLE IF NOT EXISTS {quote_ident(table)} (\n{cols}\n) WITH (\n{opts}\n);"


def sink_table_ddl(topic: str, target: str = "flink", table: str | None = None) -> str:
    """Sink table DDL for one consumer topic: value = FilteredBusinessEvent, key = entity id."""
    _check_target(target)
    table = table or table_name_for(topic)
    # Sink columns follow the contract exactly (NOT NULL where the Avro field is required), so
    # the value schema written is FilteredBusinessEvent itself, not a Flink-derived look-alike.
    cols = ",\n".join([f"  {quote_ident(KEY_COLUMN)} STRING", *_columns(FILTERED_SCHEMA, all_nullable=False)])
    if target == "confluent-cloud":
        opts = _with(
            {
                "changelog.mode": "append",
                "key.format": "raw",
                "value.format": "avro-registry",
                "value.fields-include": "except-key",
            }
        )
        return (
            f"CREATE TABLE IF NOT EXISTS {quote_ident(topic)} (\n{cols}\n)"
            f" DISTRIBUTED BY HASH({quote_ident(KEY_COLUMN)}) INTO ${{SINK_BUCKETS:-6}} BUCKETS"
            f" WITH (\n{opts}\n);"
        )
    opts = _with(_kafka_sink_options(topic, f"{topic}-value", f"cdcrouter-{topic}"))
    return f"CREATE TABLE IF NOT EXISTS {quote_ident(table)} (\n{cols}\n) WITH (\n{opts}\n);"


def _kafka_sink_options(topic: str, subject: str, transactional_prefix: str) -> dict[str, str]:
    return {
        "connector": "kafka",
        "topic": topic,
        "properties.bootstrap.servers": "${KAFKA_BOOTSTRAP_SERVERS}",
        "key.format": "raw",
        "key.fields": KEY_COLUMN,
        "value.format": "avro-confluent",
        "value.avro-confluent.url": "${SCHEMA_REGISTRY_URL}",
        "value.avro-confluent.subject": subject,
        "value.avro-confluent.schema": _contract_json(),
        "value.fields-include": "EXCEPT_KEY",
        "sink.delivery-guarantee": "${SINK_DELIVERY_GUARANTEE:-exactly-once}",
        "sink.transactional-id-prefix": transactional_prefix,
    }


def routed_table_ddl(topics: list[str]) -> str:
    """The one-sink shape's sink: the contract's columns plus ``kafka_topic``, the Kafka
    connector's writable ``topic`` metadata. Its 'topic' option lists every output topic: the
    connector refuses a row naming any other. Every record's value carries the id of the
    contract registered under the first topic's subject (the same schema every filtered subject
    holds)."""
    cols = ",\n".join(
        [
            f"  {quote_ident(KEY_COLUMN)} STRING",
            *_columns(FILTERED_SCHEMA, all_nullable=False),
            f"  {quote_ident(TOPIC_COLUMN)} STRING NOT NULL METADATA FROM 'topic'",
        ]
    )
    ordered = sorted(set(topics))
    tag = hashlib.sha256("\n".join(ordered).encode()).hexdigest()[:12]  # two deployments never share ids
    opts = _with(_kafka_sink_options(";".join(ordered), f"{ordered[0]}-value", f"cdcrouter-routed-{tag}"))
    return f"CREATE TABLE IF NOT EXISTS {quote_ident(ROUTED_TABLE)} (\n{cols}\n) WITH (\n{opts}\n);"


def insert_sql(
    f: Filter, target: str = "flink", source_table: str | None = None, sink_table: str | None = None
) -> str:
    """``INSERT INTO <sink> SELECT ... WHERE <filter>`` for one filter."""
    _check_target(target)
    if sink_table is None:
        sink_table = f.output_topic if target == "confluent-cloud" else table_name_for(f.output_topic)
    src = source_table or (RAW_TOPIC if target == "confluent-cloud" else RAW_TABLE)
    return f"INSERT INTO {quote_ident(sink_table)}\n{_select_sql(f, src)};"


def _select_sql(f: Filter, source_table: str, topic_column: bool = False) -> str:
    """The filtered rows of one filter: key, contract columns (and, for the one-sink shape, the
    row's topic)."""
    key = f"{quote_ident('eventBody')}.{quote_ident('entities')}[1].{quote_ident('entityId')}"
    meta = f"ROW({quote_string(f.id)}, {quote_string(f.consumer_id)}, {FILTERED_AT_SQL})"
    cols = ("eventHeader", "eventBody", "sourceMetadata")
    topic = f",\n  {quote_string(f.output_topic)} AS {quote_ident(TOPIC_COLUMN)}" if topic_column else ""
    return (
        f"SELECT\n  {key} AS {quote_ident(KEY_COLUMN)},\n"
        + "".join(f"  {quote_ident(c)},\n" for c in cols)
        + f"  {meta} AS {quote_ident('filterMetadata')}{topic}\n"
        f"FROM (\n  SELECT {', '.join(quote_ident(c) for c in cols)}, "
        f"CURRENT_ROW_TIMESTAMP() AS {quote_ident(ROUTED_AT)}\n"
        f"  FROM {quote_ident(source_table)}\n  WHERE {where_clause(f, indent='    ')}\n)"
    )


def routed_insert_sql(filters: list[Filter], source_table: str = RAW_TABLE) -> str:
    """The one-sink shape's only statement: every filter's rows, ``UNION ALL``, into one sink.

    One INSERT, not one per filter: each INSERT of a statement set gets a sink operator of its
    own, so only a union keeps a single Kafka writer per subtask."""
    union = "\nUNION ALL\n".join(_select_sql(f, source_table, topic_column=True) for f in filters)
    return f"INSERT INTO {quote_ident(ROUTED_TABLE)}\n{union};"


def sink_tables(topics: list[str], target: str = "flink") -> dict[str, str]:
    """Topic -> sink table name, in first-use order. Confluent Cloud tables are the topics; in
    Apache Flink ``a.b`` and ``a-b`` would both become ``a_b``, so a clash gets a hash suffix."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for topic in dict.fromkeys(topics):
        name = topic if target == "confluent-cloud" else table_name_for(topic)
        if name in used:
            name = f"{name}_{hashlib.sha256(topic.encode()).hexdigest()[:8]}"
        used.add(name)
        out[topic] = name
    return out


@cache
def _contract_json() -> str:
    """The filtered-event Avro contract as compact JSON, for ``avro-confluent.schema``."""
    return json.dumps(load_schema(FILTERED_SCHEMA), separators=(",", ":"), ensure_ascii=False)


def _with(opts: Mapping[str, str]) -> str:
    return ",\n".join(f"  {quote_string(k)} = {quote_string(v)}" for k, v in opts.items())


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise GenerateError(f"unknown target '{target}'", hint=f"use one of: {', '.join(TARGETS)}")


def generate_sql(
    filterset: FilterSet,
    target: str = "flink",
    source_name: str | None = None,
    sink_shape: str = "per-topic",
) -> str:
    """The whole deployable script for ``filterset``'s enabled filters.

    Source DDL (Apache Flink only), then either one sink DDL per topic and ONE ``EXECUTE
    STATEMENT SET`` (``per-topic``), or one sink whose rows carry their topic and one ``INSERT``
    over a ``UNION ALL`` (``one-sink``, Apache Flink only: fewer Kafka writers and transactions
    when there are many topics, see docs/routing.md). The raw topic is read once either way.
    Deterministic: the same input gives byte-identical output.

    Args:
        filterset: the compiled filters (disabled ones are skipped).
        target: "flink" (Apache Flink) or "confluent-cloud".
        source_name: the filters file name printed in the header (default: ``filterset.file``).
        sink_shape: "per-topic" (default) or "one-sink".
    """
    _check_target(target)
    if sink_shape not in SINK_SHAPES:
        raise GenerateError(
            f"unknown sink shape '{sink_shape}'", hint=f"use one of: {', '.join(SINK_SHAPES)}"
        )
    if sink_shape == "one-sink" and target != "flink":
        raise GenerateError(
            "the one-sink shape is for Apache Flink only",
            hint="Confluent Cloud tables are topics: use the per-topic shape there",
        )
    fs = drop_disabled(filterset)
    fs = flatten_logic(fs)  # type: ignore[assignment]
    assert isinstance(fs, FilterSet)
    parts: list[str] = []
    if target == "flink":
        parts.append(raw_table_ddl(target))
    if sink_shape == "one-sink" and fs.filters:
        parts.append(routed_table_ddl([f.output_topic for f in fs.filters]))
        parts.append(routed_insert_sql(list(fs.filters)))
    elif fs.filters:
        tables = sink_tables([f.output_topic for f in fs.filters], target)
        parts.extend(sink_table_ddl(t, target, table) for t, table in tables.items())
        inserts = "\n\n".join(insert_sql(f, target, sink_table=tables[f.output_topic]) for f in fs.filters)
        parts.append("EXECUTE STATEMENT SET\nBEGIN\n\n" + inserts + "\n\nEND;")
    else:
        parts.append("-- no enabled filters: nothing to run")
    body = "\n\n".join(parts) + "\n"
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    names = sorted(set(_PLACEHOLDER.findall(body)))
    source = _one_line(source_name or filterset.file)
    header = [
        f"-- Generated by cdcrouter {__version__} from {source}. Do not edit;",
        "-- regenerate with `cdcrouter generate`.",
        f"-- target: {target}",
        *([f"-- sink-shape: {sink_shape}"] if sink_shape != "per-topic" else []),
        f"-- source-sha256: {filterset.source_hash}",
        f"-- content-sha256: {digest}",
        f"-- filters: {len(fs.filters)} enabled of {len(filterset.filters)}",
    ]
    if names:
        header.append(
            "-- placeholders (filled at deploy time): "
            + ", ".join(n + (f" (default {d})" if d else "") for n, d in dict(names).items())
        )
    return "\n".join(header) + "\n\n" + body


def _one_line(text: str) -> str:
    """A file name safe inside a ``--`` comment: a newline would end the comment."""
    return _NEEDS_U_ESCAPE.sub("?", text)


def content_hash(script: str) -> str | None:
    """The ``content-sha256`` recorded in a generated script's header, if any."""
    m = re.search(r"^-- content-sha256: ([0-9a-f]{64})$", script, re.M)
    return m.group(1) if m else None


def placeholders(sql: str) -> list[str]:
    """Names of the ``${NAME}`` placeholders in ``sql`` (sorted, unique)."""
    return sorted({m.group(1) for m in _PLACEHOLDER.finditer(sql)})


def render_placeholders(sql: str, values: Mapping[str, str]) -> str:
    """Fill ``${NAME}`` / ``${NAME:-default}`` placeholders; fail listing every missing name.

    Values are inserted inside SQL string literals, so quotes in them are doubled.

    Raises:
        GenerateError: when a placeholder has no value and no default.
    """
    missing = sorted(
        {m.group(1) for m in _PLACEHOLDER.finditer(sql) if m.group(1) not in values and m.group(2) is None}
    )
    if missing:
        raise GenerateError(
            f"no value for placeholder(s) {', '.join('${' + n + '}' for n in missing)}",
            hint="set them as environment variables or in the deploy configuration",
        )

    def sub(m: re.Match[str]) -> str:
        v = values.get(m.group(1))
        if v is None:
            v = m.group(2) or ""
        return str(v).replace("'", "''")

    return _PLACEHOLDER.sub(sub, sql)
