"""A timestamp filter routes what capture really writes: timestamptz/timestamp columns captured from
PostgreSQL (ISO-8601 text, fractions of any length) against ``valueType: timestamp`` literals, with
PostgreSQL's own comparison (``col > 'literal'::timestamptz``) as the oracle."""

from __future__ import annotations

from typing import Any

import psycopg

from cdcrouter.backends.python_eval import compile_filterset
from cdcrouter.filters import load_filters_text

AT_LITERAL = "2024-06-01T08:00:00Z"
LOCAL_LITERAL = "2024-06-01T10:00:00.5+02:00"  # a timestamp without time zone is read as UTC
FILTERS = f"""
filters:
  - {{id: paid-late, consumerId: c, outputTopic: t-paid-late,
     conditions: [{{field: 'eventBody.entities[0].updatedAttributes.at', operator: greaterThan,
                   valueType: timestamp, value: "{AT_LITERAL}"}}]}}
  - {{id: booked-late, consumerId: c, outputTopic: t-booked-late,
     conditions: [{{field: 'eventBody.entities[0].updatedAttributes.atl', operator: greaterThanOrEqual,
                   valueType: timestamp, value: "{LOCAL_LITERAL}"}}]}}
"""
VALUES = [
    ("2024-06-01 08:00:00+00", "2024-06-01 08:00:00.5"),
    ("2024-06-01 08:00:00.5+00", "2024-06-01 08:00:00.499999"),
    ("2024-06-01 08:00:00.000001+00", "2024-06-01 08:00:00.500001"),
    ("2024-06-01 07:59:59.999999+00", "2024-06-01 08:00:00"),
    ("2024-06-01 10:00:00.25+02", "2024-06-02 00:00:00"),
    ("2024-06-01 03:30:00-04:30", "2024-05-31 23:59:59.99"),
    ("2023-12-31 23:59:59.123+00", "1999-01-01 00:00:00"),
    ("infinity", "-infinity"),
    (None, None),
]


def test_a_captured_timestamptz_is_routed_as_postgresql_compares_it(capture_run: Any) -> None:
    from capture_helpers import make_pipeline

    run = capture_run
    run.sql("CREATE TABLE paid (id int PRIMARY KEY, at timestamptz, atl timestamp)")
    run.pipeline = make_pipeline(run.schema, run.topic.removeprefix("raw-"), tables={"paid": {}})
    run.start()
    run.sql(
        "SET LOCAL TimeZone = 'Asia/Kathmandu'",  # +05:45: capture must not depend on the session zone
        *(
            "INSERT INTO paid VALUES ({}, {}, {})".format(
                i, *("NULL" if v is None else f"'{v}'" for v in (at, atl))
            )
            for i, (at, atl) in enumerate(VALUES)
        ),
    )
    events = run.events(expect=len(VALUES))
    engine = compile_filterset(load_filters_text(FILTERS, "filters.yaml"))
    routed = {e["eventBody"]["entities"][0]["entityId"]: sorted(engine.match(e)) for e in events}

    with psycopg.connect(run.conns.postgres.conninfo(), options=f"-c search_path={run.schema}") as conn:
        rows = conn.execute(
            "SELECT id, at > %s::timestamptz, atl >= (%s::timestamptz AT TIME ZONE 'UTC') FROM paid",
            (AT_LITERAL, LOCAL_LITERAL),
        ).fetchall()
    expected = {
        str(i): sorted([f for f, hit in (("paid-late", late), ("booked-late", booked)) if hit])
        for i, late, booked in rows
    }
    # infinity has no ISO form: capture writes the word, which a timestamp test reads as NULL
    expected[str(VALUES.index(("infinity", "-infinity")))] = []
    assert routed == expected
    assert expected["1"] == ["paid-late"] and expected["2"] == ["booked-late", "paid-late"]
