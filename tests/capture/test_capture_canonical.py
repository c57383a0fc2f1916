"""Canonical keys and timestamps at the edges: JSON keys with dots, BC and 5-digit years."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdcrouter.capture.canonical import attributes, canonical_timestamp
from cdcrouter.capture.normalize import (
    OutboxRowError,
    OutboxShape,
    RowChange,
    TableShape,
    normalize_outbox,
    normalize_row,
)


def _segments(key: str) -> list[str]:
    """Split an attribute key at its unescaped dots and unescape each segment (the documented
    rule, written independently of the code under test)."""
    out, cur, i = [], "", 0
    while i < len(key):
        c = key[i]
        if c == "\\":
            cur += key[i + 1]
            i += 2
            continue
        if c == ".":
            out.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    return [*out, cur]


def _unflatten(flat: dict[str, str | None]) -> dict[str, Any]:
    """Rebuild nested objects from the attribute keys (objects only: arrays are indexed keys)."""
    root: dict[str, Any] = {}
    for key, value in flat.items():
        node = root
        *parents, leaf = _segments(key)
        for p in parents:
            node = node.setdefault(p, {})
        assert leaf not in node, f"two attributes for the same path {key!r}"
        node[leaf] = value
    return root


def test_dotted_json_keys_do_not_collide_with_nested_keys() -> None:
    flat = dict(attributes("json", "loan", '{"a.b": 1, "a": {"b": 2}}'))
    assert flat == {"loan.a\\.b": "1", "loan.a.b": "2"}


def test_ordinary_nested_keys_keep_their_dotted_form() -> None:
    flat = dict(attributes("json", "loan", '{"loanAmount": 250000, "terms": {"months": 36}, "tags": ["x"]}'))
    assert flat == {"loan.loanAmount": "250000", "loan.terms.months": "36", "loan.tags.0": "x"}


def test_a_column_name_with_a_dot_is_escaped_like_a_json_key() -> None:
    shape = TableShape(
        "t", "T", ("id",), {"id": "plain", "a.b": "plain", "a": "json"}, dict.fromkeys(("INSERT",), "Created")
    )
    change = RowChange("INSERT", {"id": "1", "a.b": "col", "a": '{"b": "json"}'}, None, "0/1:t", 0)
    attrs = normalize_row(change, shape, 0)["eventBody"]["entities"][0]["updatedAttributes"]
    assert attrs == {"id": "1", "a\\.b": "col", "a.b": "json"}


json_keys = st.sampled_from(["a", "b", "a.b", "b.", ".", "", "a\\", "a\\.b", "\\\\", "x.y.z"])
json_objects = st.recursive(
    st.text(max_size=3),
    lambda inner: st.dictionaries(json_keys, inner, min_size=1, max_size=4),
    max_leaves=10,
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(json_keys, json_objects, min_size=1, max_size=4))
def test_flattening_loses_nothing(value: dict[str, Any]) -> None:
    """Every JSON object (with any keys) is rebuilt exactly from its attributes: no key is lost."""
    flat = dict(attributes("json", "col", json.dumps(value)))
    assert len(flat) == len(list(attributes("json", "col", json.dumps(value))))  # no key given twice
    assert _unflatten(flat) == {"col": value}


def test_outbox_keys_stay_as_written_and_a_collision_is_reported() -> None:
    def outbox(attrs: dict[str, Any]) -> dict[str, Any]:
        entities = json.dumps([{"entityType": "Loan", "entityId": "L1", "updatedAttributes": attrs}])
        row = {"id": "1", "event_name": "E", "entities": entities}
        event = normalize_outbox(RowChange("INSERT", row, None, "0/1:o", 0), OutboxShape("o"), 0)
        return event["eventBody"]["entities"][0]["updatedAttributes"]

    assert outbox({"loan.loanAmount": "1", "loan": {"x.y": 2}}) == {"loan.loanAmount": "1", "loan.x\\.y": "2"}
    with pytest.raises(OutboxRowError, match="twice"):
        outbox({"a.b": 1, "a": {"b": 2}})


# --- timestamps ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pg_text", "canonical"),
    [
        ("2024-05-01 10:00:00.5+00", "2024-05-01T10:00:00.5Z"),
        ("2024-05-01 10:00:00", "2024-05-01T10:00:00Z"),
        ("0001-01-01 00:00:00+00", "0001-01-01T00:00:00Z"),
        ("0001-12-31 23:59:59.999999+00 BC", "0000-12-31T23:59:59.999999Z"),  # 1 BC is year 0
        ("0044-03-15 12:00:00+00 BC", "-0043-03-15T12:00:00Z"),
        ("0044-03-15 12:00:00 BC", "-0043-03-15T12:00:00Z"),
        ("4713-01-01 00:00:00+00 BC", "-4712-01-01T00:00:00Z"),  # PostgreSQL's lowest
        ("10000-01-01 00:00:00+00", "+10000-01-01T00:00:00Z"),
        ("294276-12-31 23:59:59.999999", "+294276-12-31T23:59:59.999999Z"),  # PostgreSQL's highest
        ("0001-01-01 00:30:00+01", "0000-12-31T23:30:00Z"),  # an offset that crosses into 1 BC
        ("infinity", "infinity"),
        ("-infinity", "-infinity"),
    ],
)
def test_timestamps_outside_years_1_to_9999_are_iso_8601_expanded_years(pg_text: str, canonical: str) -> None:
    assert canonical_timestamp(pg_text) == canonical


_ISO = re.compile(r"([+-]?\d{4,})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?Z")


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(-14 * 60, 14 * 60),
)
def test_any_offset_gives_the_utc_instant(local: datetime, offset_min: int) -> None:
    """The oracle is the standard library's datetime arithmetic (years 1-9999)."""
    sign = "+" if offset_min >= 0 else "-"
    text = local.isoformat(sep=" ") + f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    utc = (local - timedelta(minutes=offset_min)).replace(tzinfo=UTC)
    m = _ISO.fullmatch(canonical_timestamp(text))
    assert m is not None
    y, mo, d, hh, mi, ss, frac = m.groups()
    got = datetime(int(y), int(mo), int(d), int(hh), int(mi), int(ss), tzinfo=UTC)
    assert got + timedelta(microseconds=int((frac or ".0")[1:].ljust(6, "0"))) == utc


# --- on the real stack: snapshot and stream give the same canonical values ----------------------

EDGE_DDL = """
CREATE TABLE edge_values (id int PRIMARY KEY, doc jsonb, ts timestamptz, tsl timestamp, "a.b" text);
"""
EDGE_ROW = (
    """'{"a.b": 1, "a": {"b": 2}, "loan": {"loanAmount": 5}}', """
    "'0044-03-15 12:00:00+00 BC', '10000-01-01 00:00:00', 'x'"
)
EDGE_ATTRS = {
    "doc.a\\.b": "1",
    "doc.a.b": "2",
    "doc.loan.loanAmount": "5",
    "ts": "-0043-03-15T12:00:00Z",
    "tsl": "+10000-01-01T00:00:00Z",
    "a\\.b": "x",
}


def test_snapshot_and_stream_agree_on_dotted_keys_and_extreme_timestamps(capture_run: Any) -> None:
    from capture_helpers import make_pipeline

    run = capture_run
    run.sql(EDGE_DDL)
    run.pipeline = make_pipeline(run.schema, run.topic.removeprefix("raw-"), tables={"edge_values": {}})
    run.sql(f"INSERT INTO edge_values VALUES (1, {EDGE_ROW})")  # before capture: a snapshot row
    run.start()
    run.sql(
        f"INSERT INTO edge_values VALUES (2, {EDGE_ROW})",
        "INSERT INTO edge_values VALUES (3, NULL, 'infinity', '-infinity', NULL)",
        """UPDATE edge_values SET doc = '{"a.b": 1, "a": {"b": 3}}' WHERE id = 1""",
    )
    events = run.events(expect=4)
    by = {(e["sourceMetadata"]["operation"], e["eventBody"]["entities"][0]["entityId"]): e for e in events}
    attrs = {k: v["eventBody"]["entities"][0]["updatedAttributes"] for k, v in by.items()}
    assert attrs[("SNAPSHOT", "1")] == {"id": "1", **EDGE_ATTRS}
    assert attrs[("INSERT", "2")] == {"id": "2", **EDGE_ATTRS}
    assert attrs[("INSERT", "3")] == {
        "id": "3",
        "doc": None,
        "ts": "infinity",
        "tsl": "-infinity",
        "a\\.b": None,
    }
    # only the nested key changed, the dotted one did not; a key that went away is null
    assert attrs[("UPDATE", "1")] == {"id": "1", "doc.a.b": "3", "doc.loan.loanAmount": None}


@pytest.mark.parametrize(
    ("micros", "canonical"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1_714_557_600_500_000, "2024-05-01T10:00:00.5Z"),
        (-62_135_596_800_000_000, "0001-01-01T00:00:00Z"),
        (-63_745_012_800_000_000, "-0050-01-01T12:00:00Z"),  # 51 BC: PostgreSQL's extract(epoch)
        (253_402_300_800_000_000, "+10000-01-01T00:00:00Z"),
    ],
)
def test_debezium_micro_timestamps_of_any_year_reach_the_same_canonical_form(
    micros: int, canonical: str
) -> None:
    from cdcrouter.capture.debezium import _pg_text

    assert canonical_timestamp(_pg_text(micros, "timestamp without time zone")) == canonical  # type: ignore[arg-type]


def test_filters_address_an_escaped_key_and_the_nested_one_apart() -> None:
    """The filter language takes everything after ``updatedAttributes.`` as the map key, so the
    escaped key capture writes is addressed as written; the ordinary dotted path is unchanged."""
    from cdcrouter.backends.flink_sql import where_clause
    from cdcrouter.backends.python_eval import compile_filterset
    from cdcrouter.filters import load_filters_text

    def one(field: str) -> str:
        return (
            "filters:\n  - {id: f, consumerId: c, outputTopic: t, conditions: "
            f"[{{field: '{field}', operator: equals, value: '1'}}]}}\n"
        )

    attrs = dict(attributes("json", "doc", '{"a.b": "1", "a": {"b": "2"}, "loan": {"loanAmount": "1"}}'))
    event = {
        "eventHeader": {"uuid": "u", "eventName": "E", "createdDate": 0, "savedDate": 0, "eventType": None},
        "eventBody": {"entities": [{"entityType": "T", "entityId": "1", "updatedAttributes": attrs}]},
        "sourceMetadata": {"table": "t", "operation": "INSERT", "timestamp": 0},
    }
    base = "eventBody.entities[0].updatedAttributes."
    escaped = load_filters_text(one(base + "doc.a\\.b"))
    nested = load_filters_text(one(base + "doc.a.b"))
    ordinary = load_filters_text(one(base + "doc.loan.loanAmount"))
    assert compile_filterset(escaped).match(event) == ["f"]
    assert compile_filterset(nested).match(event) == []  # doc.a.b is "2"
    assert compile_filterset(ordinary).match(event) == ["f"]
    assert "['doc.a\\.b']" in where_clause(escaped.filters[0])
    assert "['doc.loan.loanAmount']" in where_clause(ordinary.filters[0])


@pytest.mark.parametrize(
    ("days", "pg_text"),
    [  # (date - '1970-01-01', date::text) as PostgreSQL 15 printed them
        (19844, "2024-05-01"),
        (-719162, "0001-01-01"),
        (-719528, "0001-01-01 BC"),
        (-735160, "0044-03-15 BC"),
        (-2440550, "4713-01-01 BC"),
        (2932897, "10000-01-01"),
    ],
)
def test_debezium_dates_of_any_year_become_postgresql_text(days: int, pg_text: str) -> None:
    from cdcrouter.capture.debezium import _pg_text

    assert _pg_text(days, "date") == pg_text
