"""The indexed matcher against the independent oracle (oracle.py), on generated filter sets.

Each set mixes conditions the index can use (text ``equals``/``in`` on eventName, eventType, table,
operation, entities[N].entityType, boolean and text attributes) with ones it cannot (numbers,
regexes, isNull, ``notIn``, ``entities[*]``), nested in any/all/not groups and joined by AND or OR;
events have NULL and missing fields, values differing only in case or spaces, and 0-3 entities.
The plan is checked to really dispatch, so a wrong index (an unsound requirement, a bad residual,
a lost filter or order) shows up as a disagreement.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from cdcrouter.backends.index import assume, plan_index, required_values
from cdcrouter.backends.python_eval import compile_filterset
from cdcrouter.filters import load_filters_text
from cdcrouter.ir.passes import flatten_logic

from .oracle import Oracle

NAMES = ["LoanCreated", "LoanUpdated", "CarSold", "CarListed", "ServiceDone", "PaymentMade"]
TYPES = ["Loan", "Car", "Service"]
TABLES = ["loans", "cars", "services"]
OPERATIONS = ["INSERT", "UPDATE", "DELETE"]
STATUSES = ["OPEN", "CLOSED", "LATE"]
# what events carry besides the filters' values: case, spaces, empty text
NEAR_MISSES = ["loancreated", "LoanCreated ", "", "LOAN", "car"]


def _text_leaf(rng: random.Random) -> dict[str, Any]:
    """A condition on a text field the index can use (equals / in), or its negation (notIn / not)."""
    field, pool = rng.choice(
        [
            ("eventHeader.eventName", NAMES),
            ("eventHeader.eventName", NAMES),
            ("eventHeader.eventType", ["CDC", "outbox"]),
            ("sourceMetadata.table", TABLES),
            ("sourceMetadata.operation", OPERATIONS),
            ("eventBody.entities[0].entityType", TYPES),
            ("eventBody.entities[1].entityType", TYPES),
            ("eventBody.entities[0].updatedAttributes.status", STATUSES),
        ]
    )
    op = rng.choice(["equals", "equals", "in", "in", "notIn"])
    if op == "equals":
        return {"field": field, "operator": op, "value": rng.choice(pool)}
    return {"field": field, "operator": op, "values": rng.sample(pool, rng.randint(1, min(3, len(pool))))}


def _other_leaf(rng: random.Random) -> dict[str, Any]:
    """A condition the index cannot use."""
    return rng.choice(
        [
            {
                "field": "eventBody.entities[0].updatedAttributes.amount",
                "operator": rng.choice(["greaterThan", "lessThanOrEqual"]),
                "value": rng.choice([100, 5000, 99.5]),
            },
            {"field": "eventBody.entities[0].updatedAttributes.flag", "operator": "equals", "value": True},
            {"field": "eventBody.entities[0].updatedAttributes.status", "operator": "isNull"},
            {"field": "eventHeader.eventType", "operator": rng.choice(["isNull", "isNotNull"])},
            {"field": "eventHeader.eventName", "operator": "matches", "value": "^Loan"},
            {"field": "eventBody.entities[*].entityType", "operator": "equals", "value": rng.choice(TYPES)},
            {"field": "sourceMetadata.table", "operator": "lessThan", "value": "d"},
            {"field": "eventHeader.createdDate", "operator": "greaterThan", "value": 1_764_000_000_500},
        ]
    )


def _item(rng: random.Random, depth: int) -> dict[str, Any]:
    roll = rng.random()
    if depth < 2 and roll < 0.25:
        kind = rng.choice(["any", "all", "not"])
        item: dict[str, Any] = {kind: [_item(rng, depth + 1) for _ in range(rng.randint(1, 3))]}
    else:
        item = _text_leaf(rng) if roll < 0.7 else _other_leaf(rng)
    if rng.random() < 0.15:
        item["logicalOperator"] = rng.choice(["AND", "OR"])
    return item


def _filters_yaml(rng: random.Random, count: int) -> str:
    """Most filters start with a required text condition (what the index dispatches on)."""
    lines = ["filters:"]
    for i in range(count):
        conditions = [_item(rng, 0) for _ in range(rng.randint(0, 3))]
        if rng.random() < 0.8:
            conditions.insert(0, _text_leaf(rng))
        if not conditions:
            conditions = [_other_leaf(rng)]
        flt: dict[str, Any] = {
            "id": f"f{i}",
            "consumerId": "c",
            "outputTopic": f"t-{i}",
            "conditionLogic": "AND" if rng.random() < 0.85 else "OR",
            "conditions": conditions,
        }
        if rng.random() < 0.05:
            flt["enabled"] = False
        lines.append("  - " + json.dumps(flt))
    return "\n".join(lines) + "\n"


def _maybe(rng: random.Random, pool: list[str], none: float = 0.15) -> str | None:
    if rng.random() < none:
        return None
    return rng.choice(NEAR_MISSES) if rng.random() < 0.1 else rng.choice(pool)


def _event(rng: random.Random, n: int) -> dict[str, Any]:
    entities = []
    for k in range(rng.choice([0, 1, 1, 1, 2, 3])):
        attrs: dict[str, str | None] = {}
        for key, pool in (
            ("status", STATUSES),
            ("amount", ["50", "100", "100.0", "5000", "99.5", "x", " 7 "]),
            ("flag", ["true", "false", "TRUE"]),
        ):
            if rng.random() < 0.7:
                attrs[key] = _maybe(rng, pool)
        etype = rng.choice(NEAR_MISSES) if rng.random() < 0.1 else rng.choice(TYPES)
        entities.append({"entityType": etype, "entityId": f"E-{n}-{k}", "updatedAttributes": attrs})
    return {
        "eventHeader": {
            "uuid": f"u{n}",
            "eventName": _maybe(rng, NAMES, none=0.0),
            "createdDate": 1_764_000_000_000 + rng.randrange(1000),
            "savedDate": 1_764_000_000_000,
            "eventType": _maybe(rng, ["CDC", "outbox"], none=0.3),
        },
        "eventBody": {"entities": entities},
        "sourceMetadata": {
            "table": _maybe(rng, TABLES),
            "operation": _maybe(rng, OPERATIONS),
            "timestamp": None if rng.random() < 0.2 else 1_764_000_000_000,
        },
    }


@pytest.mark.parametrize("seed", range(8))
def test_indexed_matcher_agrees_with_the_oracle(seed: int) -> None:
    rng = random.Random(seed)
    text = _filters_yaml(rng, 120)
    fs = flatten_logic(load_filters_text(text, f"gen{seed}.yaml"))
    plan = plan_index(fs.enabled())  # type: ignore[attr-defined]
    indexed = sum(len({i for b in d.buckets.values() for i, _ in b}) for d in plan.dispatches)
    assert len(plan.dispatches) >= 2 and indexed >= 35, "the generated set must exercise the index"
    compiled = compile_filterset(load_filters_text(text, f"gen{seed}.yaml"))
    oracle = Oracle(text)
    events = [_event(rng, n) for n in range(400)]
    wrong = [(e, oracle.matching_ids(e), compiled.match(e)) for e in events]
    wrong = [w for w in wrong if w[1] != w[2]]
    assert not wrong, (
        f"{len(wrong)} of {len(events)} disagree; first: oracle {wrong[0][1]}, indexed {wrong[0][2]}\n"
        f"event: {wrong[0][0]}"
    )
    unindexed = compile_filterset(load_filters_text(text, f"gen{seed}.yaml"), index=False)
    assert "_D0" in compiled.source and "_D0" not in unindexed.source
    assert [unindexed.match(e) for e in events] == [compiled.match(e) for e in events]
    per_filter = [[f for f, p in compiled.predicates.items() if p(e) is True] for e in events]
    assert per_filter == [compiled.match(e) for e in events]  # the unindexed predicates agree too
    assert sum(map(len, per_filter)) > 50, "the events must match something"


def _condition(text: str) -> Any:
    fs = flatten_logic(load_filters_text("filters:\n  - " + text + "\n", "one.yaml"))
    return fs.filters[0].condition  # type: ignore[attr-defined]


NAME = "eventHeader.eventName"


def _leaf(op: str, *values: str, field: str = NAME, **extra: str) -> dict[str, Any]:
    if op in ("in", "notIn"):
        return {"field": field, "operator": op, "values": list(values), **extra}
    return {"field": field, "operator": op, **({"value": values[0]} if values else {}), **extra}


@pytest.mark.parametrize(
    ("conditions", "logic", "required"),
    [
        ([_leaf("equals", "A")], "AND", {"A"}),
        ([_leaf("in", "A", "B"), _leaf("in", "B", "C")], "AND", {"B"}),
        ([_leaf("equals", "A"), _leaf("equals", "B")], "OR", {"A", "B"}),
        ([{"not": [_leaf("notIn", "A")]}], "AND", {"A"}),
        ([{"not": [_leaf("in", "A")]}], "AND", None),
        ([_leaf("equals", "A"), _leaf("isNull", field="sourceMetadata.table")], "OR", None),
        ([{"not": [{"any": [_leaf("notIn", "A"), _leaf("isNull")]}]}], "AND", {"A"}),
        ([_leaf("equals", "1", valueType="number")], "AND", None),
        ([_leaf("equals", "Car", field="eventBody.entities[*].entityType")], "AND", None),
    ],
)
def test_required_values_are_what_a_match_implies(
    conditions: list[dict[str, Any]], logic: str, required: set[str] | None
) -> None:
    """Cases by hand: AND intersects, OR unites, NOT flips notIn into a requirement and in into none,
    and a number cast or the entity quantifier is never indexed."""
    flt = {"id": "f", "consumerId": "c", "outputTopic": "t", "conditionLogic": logic}
    need = required_values(_condition(json.dumps({**flt, "conditions": conditions})))
    by_path = {"".join(getattr(s, "name", "") for s in k): v for k, v in need.items()}
    assert by_path.get("eventHeadereventName") == (None if required is None else frozenset(required))


def test_assume_folds_with_three_valued_logic() -> None:
    """Knowing eventName = A: the equality is TRUE, isNull FALSE, and what is left is the rest."""
    flt = {
        "id": "f",
        "consumerId": "c",
        "outputTopic": "t",
        "conditions": [
            {"field": NAME, "operator": "in", "values": ["A", "B"]},
            {"not": [{"field": NAME, "operator": "isNull"}]},
            {"field": "sourceMetadata.table", "operator": "equals", "value": "loans"},
        ],
    }
    cond = _condition(json.dumps(flt))
    key = next(iter(required_values(cond)))
    assert assume(cond, key, "A") == cond.operands[2]  # the table test alone
    assert assume(cond, key, "C") is False
