"""The routing oracle (oracle.py) checked by hand, then held against the compiled engine.

The hand-written cases pin the oracle to docs/filter-language.md (specific events, the exact topics
each must reach); the differential cases run it and ``compile_filterset`` over the golden fixtures,
the example and benchmark filters and a file using the rest of the language, on generated events
and on events bent to hit NULLs, odd number texts, several entities and boundary values.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest

from cdcrouter.backends.python_eval import compile_filterset
from cdcrouter.filters import load_filters_text
from cdcrouter.route.events import bench_filters_yaml, make_event

from .oracle import Oracle, expected_routing

ROOT = Path(__file__).resolve().parents[2]

# The parts of the language the fixtures do not use: string order, booleans, number texts,
# precedence, NULL through not/notIn/between, isNull on a number read, maxEntities, bracket keys.
LANGUAGE = r"""
settings: {maxEntities: 2}
filters:
  - {id: str-order, consumerId: c, outputTopic: t-str-order,
     conditions: [{field: 'eventBody.entities[0].updatedAttributes.name',
                   operator: greaterThan, value: "Zz"}]}
  - {id: emoji-order, consumerId: c, outputTopic: t-emoji-order,
     conditions: [{field: 'eventBody.entities[0].updatedAttributes.name',
                   operator: lessThan, value: "\uff61"}]}
  - {id: flag-true, consumerId: c, outputTopic: t-flag-true,
     conditions: [{field: 'eventBody.entities[0].updatedAttributes.flag', operator: equals, value: true}]}
  - {id: flag-in, consumerId: c, outputTopic: t-flag-in,
     conditions: [{field: 'eventBody.entities[0].updatedAttributes.flag', operator: notIn, values: [false]}]}
  - {id: num-eq, consumerId: c, outputTopic: t-num-eq,
     conditions: [{field: 'eventBody.entities[0].updatedAttributes.n', operator: equals, value: 12}]}
  - {id: num-in, consumerId: c, outputTopic: t-num-in,
     conditions: [{field: 'eventBody.entities[0].updatedAttributes.n', operator: in, values: [0.5, "1e3", -7],
                   valueType: number}]}
  - {id: num-null, consumerId: c, outputTopic: t-num-null,
     conditions: [{field: 'eventBody.entities[0].updatedAttributes.n', operator: isNull, valueType: number}]}
  - {id: num-not, consumerId: c, outputTopic: t-num-not,
     conditions: [{not: [{field: 'eventBody.entities[0].updatedAttributes.n',
                          operator: greaterThan, value: 5}]}]}
  - {id: num-between, consumerId: c, outputTopic: t-num-between,
     conditions: [{field: 'eventBody.entities[0].updatedAttributes.n',
                   operator: between, min: -1, max: 12.5}]}
  - {id: saved-ts, consumerId: c, outputTopic: t-saved-ts,
     conditions: [{field: 'eventHeader.savedDate', operator: between, valueType: timestamp,
                   min: "2025-11-24T17:00:00.500+01:00", max: 1764000001000}]}
  - {id: precedence, consumerId: c, outputTopic: t-precedence, conditionLogic: OR,
     conditions: [
       {field: 'eventHeader.eventName', operator: equals, value: CarSold},
       {field: 'sourceMetadata.operation', operator: equals, value: DELETE, logicalOperator: AND},
       {field: 'eventBody.entities[0].updatedAttributes.n', operator: lessThan, value: 0},
       {all: [{field: 'eventHeader.eventType', operator: isNotNull},
              {field: 'eventHeader.eventType', operator: notIn, values: [CDC], logicalOperator: OR}],
        logicalOperator: AND}]}
  - {id: second-entity, consumerId: c, outputTopic: t-second-entity,
     conditions: [{field: 'eventBody.entities[*].entityType', operator: equals, value: Loan},
                  {anyEntity: [{field: 'eventBody.entities[*].updatedAttributes.n',
                                operator: greaterThan, value: 1},
                               {field: 'eventBody.entities[*].entityType', operator: equals, value: Car}]}]}
  - {id: not-star, consumerId: c, outputTopic: t-not-star,
     conditions: [{not: [{field: 'eventBody.entities[*].updatedAttributes.n', operator: equals, value: 12}]}]}
  - {id: dotted, consumerId: c, outputTopic: t-dotted,
     conditions: [{field: 'eventBody.entities[0].updatedAttributes.doc.a\.b', operator: matches,
                   value: "^x.$"}]}
  - {id: paid-after, consumerId: c, outputTopic: t-paid-after,
     conditions: [{field: 'eventBody.entities[0].updatedAttributes.paid_at', operator: greaterThan,
                   valueType: timestamp, value: "2024-06-01T08:00:00Z"}]}
  - {id: paid-window, consumerId: c, outputTopic: t-paid-window,
     conditions: [{field: 'eventBody.entities[0].updatedAttributes.paid_at', operator: between,
                   valueType: timestamp, min: "2024-06-01T09:59:59.9999995+02:00", max: 1717228800500}]}
  - {id: off, consumerId: c, outputTopic: t-off, enabled: false,
     conditions: [{field: 'eventHeader.eventName', operator: isNotNull}]}
"""


def _event(
    name: str = "LoanCreated",
    entities: list[tuple[str, dict[str, str | None]]] | None = None,
    operation: str | None = "INSERT",
    event_type: str | None = "CDC",
) -> dict[str, Any]:
    ents = [
        {"entityType": t, "entityId": f"{t[:1]}-{i}", "updatedAttributes": a}
        for i, (t, a) in enumerate(entities if entities is not None else [("Loan", {})])
    ]
    return {
        "eventHeader": {
            "uuid": "u",
            "eventName": name,
            "createdDate": 1_764_000_000_000,
            "savedDate": 1_764_000_000_500,
            "eventType": event_type,
        },
        "eventBody": {"entities": ents},
        "sourceMetadata": {"table": "loan_entities", "operation": operation, "timestamp": 1_764_000_000_000},
    }


BENCH_CASES = [
    (
        _event("LoanCreated", [("Loan", {"loan.loanAmount": "100000.01", "loan.status": "LATE"})]),
        ["loan-created", "big-loans", "late-loans", "created"],
    ),
    (
        _event(
            "LoanCreated", [("Loan", {"loan.loanAmount": "100000", "loan.termMonths": "72"})], event_type=None
        ),
        ["loan-created", "long-loans", "created"],
    ),  # 100000 is not > 100000; NULL eventType: notIn UNKNOWN
    (
        _event(
            "LoanUpdated", [("Loan", {"loan.interestRate": "1.99", "loan.loanAmount": "1e6"})], "DELETE", "x"
        ),
        ["big-loans", "cheap-rate", "deletes", "not-cdc"],
    ),
    (
        _event(
            "CarSold",
            [
                (
                    "Car",
                    {"car.make": "Tesla", "car.mileage": "250000", "car.vin": "VIN7x", "car.year": " 2025 "},
                )
            ],
        ),
        ["car-sold", "tesla", "new-cars", "high-mileage", "vin-7"],
    ),
    # 11 fraction digits round half-up to 200000 (inside); "NaN" and "2_025" are not numbers
    (
        _event(
            "CarCreated",
            [
                (
                    "Car",
                    {
                        "car.make": "tesla",
                        "car.mileage": "199999.99999999995",
                        "car.vin": "xVIN7",
                        "car.price": "NaN",
                        "car.year": "2_025",
                    },
                )
            ],
        ),
        ["high-mileage", "created"],
    ),
    (
        _event(
            "ServiceCompleted",
            [("ServiceRecord", {"service.type": "tires", "service.cost": "2000.01", "service.notes": ""})],
        ),
        ["service-done", "brakes", "costly-service", "service-notes"],
    ),
    (
        _event(
            "ServiceScheduled",
            [("ServiceRecord", {"service.type": "Brakes", "service.cost": "2000", "service.notes": None})],
        ),
        [],
    ),
    (_event("LoanClosed", []), ["loan-closed"]),
]


@pytest.mark.parametrize(("event", "ids"), BENCH_CASES, ids=[str(i) for i in range(len(BENCH_CASES))])
def test_the_oracle_routes_hand_checked_events_of_the_benchmark_filters(
    event: dict[str, Any], ids: list[str]
) -> None:
    oracle = Oracle(bench_filters_yaml("p-", 20))
    assert oracle.topics(event) == ["p-" + i for i in ids]


LANGUAGE_CASES = [
    (
        _event("LoanCreated", [("Loan", {"name": "a", "flag": "true", "n": " 12 "})]),
        ["str-order", "emoji-order", "flag-true", "flag-in", "num-eq", "num-between", "saved-ts"],
    ),
    (  # UTF-16 order puts the emoji (a surrogate pair) below U+FF61; "TRUE" is not the canonical text;
        # "1_000" reads NULL: NOT UNKNOWN is UNKNOWN, but isNull tests the field, which is there
        _event(
            "CarSold",
            [
                ("Loan", {"name": "\U0001f600", "flag": "TRUE", "n": "1_000", "doc.a\\.b": "xy"}),
                ("Car", {"n": "3"}),
            ],
            "DELETE",
            None,
        ),
        [
            "str-order",
            "emoji-order",
            "flag-in",
            "saved-ts",
            "precedence",
            "second-entity",
            "not-star",
            "dotted",
        ],
    ),
    (  # the Car is the third entity, past maxEntities: 2
        _event("CarSold", [("Loan", {"n": "-0.5"}), ("Loan", {}), ("Car", {"n": "3"})], "INSERT", "outbox"),
        ["num-not", "num-between", "saved-ts", "precedence", "not-star"],
    ),
]


# valueType timestamp reads capture's ISO-8601 text (any fraction length, Z or an offset) as the
# instant it names: "...00.5Z" is later than "...00Z" although it sorts before it as a string.
_PAID_CASES = [
    ("2024-06-01T08:00:00.5Z", ["paid-after", "paid-window"]),
    ("2024-06-01T08:00:00Z", ["paid-window"]),
    ("2024-06-01T08:00:00.000001Z", ["paid-after", "paid-window"]),
    ("2024-06-01T07:59:59.9999994Z", []),
    ("2024-06-01T07:59:59.9999995Z", ["paid-window"]),
    ("2024-06-01T10:00:00.25+02:00", ["paid-after", "paid-window"]),
    ("2024-06-01T03:30:00.501-04:30", ["paid-after"]),
    ("1717228800000", ["paid-window"]),
    ("2024-06-01 08:00:01Z", []),  # not the documented form: NULL, no match, no error
    ("2024-06-01T08:00:01", []),  # no offset
    ("2024-02-30T08:00:01Z", []),  # no such day
    ("+10000-01-01T00:00:00Z", []),  # capture's expanded years are outside 0001-9999
    ("infinity", []),
]


@pytest.mark.parametrize(("event", "ids"), LANGUAGE_CASES, ids=[str(i) for i in range(len(LANGUAGE_CASES))])
def test_the_oracle_follows_the_documented_language(event: dict[str, Any], ids: list[str]) -> None:
    assert Oracle(LANGUAGE).matching_ids(event) == ids


@pytest.mark.parametrize(("text", "ids"), _PAID_CASES, ids=[t for t, _ in _PAID_CASES])
def test_timestamp_filters_read_iso_text_as_an_instant(text: str, ids: list[str]) -> None:
    """The oracle (strptime) and the compiled engine both route captured ISO timestamps."""
    event = _event("LoanCreated", [("Loan", {"paid_at": text})])
    paid = [i for i in Oracle(LANGUAGE).matching_ids(event) if i.startswith("paid-")]
    assert paid == ids
    engine = compile_filterset(load_filters_text(LANGUAGE, "language.yaml"))
    assert [i for i in engine.match(event) if i.startswith("paid-")] == ids


def test_expected_routing_counts_each_event_per_topic() -> None:
    events = [make_event(i) for i in range(200)]
    text = bench_filters_yaml("p-", 20)
    topics = sorted(f["outputTopic"] for f in Oracle(text).filters)
    got = expected_routing(text, events, topics)
    names = {e["eventHeader"]["uuid"]: e["eventHeader"]["eventName"] for e in events}
    assert set(got["p-loan-created"]) == {u for u, n in names.items() if n == "LoanCreated"}
    assert set(got["p-created"]) == {u for u, n in names.items() if n in ("LoanCreated", "CarCreated")}
    assert all(c == 1 for counts in got.values() for c in counts.values())


# --- the oracle against the compiled engine -----------------------------------------------------

_ODD_TEXTS = [
    None,
    "",
    " 12 ",
    "+.5",
    "1E3",
    "1_000",
    "NaN",
    "0x10",
    "12L",
    "-3.5",
    "-3.50000000001",
    "100000.25",
    "100000.250000000049",
    "100000.25000000005",
    "xy\n",
    "x\r",
    "x\u2028",
    "20000",
    "80000.00",
    "true",
    "TRUE",
    "false",
    "Zz",
    "a",
    "\U0001f600",
    "\uff61",
    "C-1",
    "x'); DROP TABLE t; --",
    "back\\slash",
    "two\nlines",
    "xy",
    "x\n",
    "2024-01-01T00:00:00Z",
    "2024-01-01T00:00:00.5Z",
    "2023-12-31T23:00:00.500001-01:00",
    "2024-01-01T05:30:00.123456789+05:30",
    "2024-02-29T00:00:00Z",
    "2023-02-29T00:00:00Z",
    "2024-01-01T00:00:00",
    "1704067200500",
]
_ATTR_KEYS = [
    "car.price",
    "car.year",
    "car.vin",
    "car.make",
    "car.mileage",
    "loan.loanAmount",
    "loan.status",
    "loan.termMonths",
    "loan.interestRate",
    "service.type",
    "service.cost",
    "service.notes",
    "service.serviceType",
    "service.priority",
    "car.electric",
    "flag",
    "score",
    "name",
    "n",
    "it's a key",
    "doc.a\\.b",
    "paid_at",
]


def _bent(rng: random.Random, event: dict[str, Any]) -> dict[str, Any]:
    """``event`` with odd values: NULLs, number texts, extra or no entities, edge names and times."""
    e = copy.deepcopy(event)
    h, src = e["eventHeader"], e["sourceMetadata"]
    h["eventName"] = rng.choice(
        [h["eventName"], "A", "B", "C", "ServiceX", "a\\b'c", "xa\\b'cx", "LoanCreated"]
    )
    h["eventType"] = rng.choice([None, "CDC", "outbox", "x"])
    src["operation"] = rng.choice([None, "DELETE", "SNAPSHOT", "INSERT"])
    src["table"] = rng.choice([None, "loans", "cars"])
    src["timestamp"] = rng.choice([None, 1_700_000_000_000, 1_699_999_999_999, src["timestamp"]])
    h["createdDate"] = rng.choice([1_717_243_200_123, 1_717_243_200_122, h["createdDate"]])
    ents = e["eventBody"]["entities"]
    for _ in range(rng.randrange(0, 13)):
        kind = rng.choice(["Car", "Loan", "O'Brien", "ServiceRecord"])
        attrs = {k: rng.choice(_ODD_TEXTS) for k in rng.sample(_ATTR_KEYS, 6)}
        ents.append(
            {
                "entityType": kind,
                "entityId": rng.choice(["C-9", "LOAN-12.xy", "loan-123.x\n", "LOAN-12.xy\n", "X"]),
                "updatedAttributes": attrs,
            }
        )
    if rng.random() < 0.1:
        ents.clear()
    for ent in ents[:2]:
        for k in rng.sample(_ATTR_KEYS, 4):
            ent["updatedAttributes"][k] = rng.choice(_ODD_TEXTS)
    return e


def _filter_texts() -> list[tuple[str, str]]:
    fixtures = sorted((ROOT / "tests" / "fixtures" / "filters").glob("*.yaml"))
    paths = [*fixtures, ROOT / "examples" / "filters.yaml"]
    return [(p.name, p.read_text()) for p in paths] + [
        ("bench", bench_filters_yaml("p-", 20)),
        ("language", LANGUAGE),
    ]


@pytest.mark.parametrize(("name", "text"), _filter_texts(), ids=[n for n, _ in _filter_texts()])
def test_the_oracle_and_the_compiled_engine_agree(name: str, text: str) -> None:
    """A disagreement is either an oracle bug or a compiler bug: both are worth a look."""
    rng = random.Random(13)
    events = [make_event(i) for i in range(300)]
    events += [_bent(rng, e) for e in events for _ in range(3)]
    oracle = Oracle(text)
    engine = compile_filterset(load_filters_text(text, name))
    wrong = [(e, oracle.matching_ids(e), engine.match(e)) for e in events]
    wrong = [w for w in wrong if w[1] != w[2]]
    assert not wrong, (
        f"{len(wrong)} disagreements; first: oracle {wrong[0][1]}, engine {wrong[0][2]}: {wrong[0][0]}"
    )
