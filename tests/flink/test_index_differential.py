"""The indexed path of the embedded engine against real Flink.

``test_differential`` draws filters whose conditions are mostly on body fields, so few of them are
indexed. Here every random filter (all operators, groups, NULLs, ``entities[*]``) is joined to a
text condition the index can use, by AND or inside an OR/NOT group, and the plan must dispatch most
of them; Flink evaluates the same filters' WHERE clauses without any index.
"""

from __future__ import annotations

import random
from typing import Any

from cdcrouter.backends.index import plan_index
from cdcrouter.filters import load_filters_text
from cdcrouter.ir.passes import flatten_logic

from .gen import ENTITY_TYPES, EVENT_NAMES, OPERATIONS, TABLES, RandomDraw, filters_yaml, gen_event
from .test_differential import SEED, compare, valid_filters

INDEXABLE = [
    ("eventHeader.eventName", EVENT_NAMES),
    ("sourceMetadata.table", TABLES[1:]),
    ("sourceMetadata.operation", OPERATIONS[1:]),
    ("eventBody.entities[0].entityType", ENTITY_TYPES),
]


def _indexable(rng: random.Random) -> dict[str, Any]:
    field, pool = rng.choice(INDEXABLE)
    if rng.random() < 0.5:
        return {"field": field, "operator": "equals", "value": rng.choice(pool)}
    return {"field": field, "operator": "in", "values": rng.sample(pool, rng.randint(1, 2))}


def _with_dispatch(rng: random.Random, flt: dict[str, Any]) -> dict[str, Any]:
    """``flt`` with a required text condition: ANDed in front, or as OR of two, or NOT notIn."""
    shape = rng.random()
    lead = _indexable(rng)
    if shape < 0.2:
        lead = {"any": [lead, {**_indexable(rng), "field": lead["field"]}]}
    elif shape < 0.3 and lead["operator"] == "in":
        lead = {"not": [{**lead, "operator": "notIn"}]}
    group = "any" if flt.get("conditionLogic") == "OR" else "all"
    return {**flt, "conditionLogic": "AND", "conditions": [lead, {group: flt["conditions"]}]}


def test_indexed_agreement(flink_checker: Any) -> None:
    rng = random.Random(SEED)
    filters = [_with_dispatch(rng, f) for f in valid_filters(RandomDraw(rng), 160)]
    plan = plan_index(flatten_logic(load_filters_text(filters_yaml(filters), "i.yaml")).enabled())  # type: ignore[attr-defined]
    indexed = sum(len({i for b in d.buckets.values() for i, _ in b}) for d in plan.dispatches)
    assert indexed >= 120, f"only {indexed} of 160 filters are dispatched"
    events = [gen_event(RandomDraw(rng), i) for i in range(1500)]
    problems = compare(flink_checker, filters, events, entity_limit=3)
    assert not problems, f"{len(problems)} disagreements; first ones:\n" + "\n".join(problems[:6])
