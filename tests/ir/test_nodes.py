"""IR base-class behaviour: walk, to_dict/from_dict round trips, passes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdcrouter.filters import load_filters, load_filters_text
from cdcrouter.ir.nodes import PREDICATE_LEAVES, And, AnyEntity, FieldRef, FilterSet, Literal, Node, Not, Or
from cdcrouter.ir.passes import drop_disabled, flatten_logic
from cdcrouter.ir.span import Span

ROOT = Path(__file__).resolve().parents[2]
FILES = [
    ROOT / "examples" / "filters.yaml",
    *sorted((ROOT / "tests" / "fixtures" / "filters").glob("*.yaml")),
]
S = Span("t", 3, 4)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_filter_sets_round_trip_through_dicts(path: Path) -> None:
    fs = load_filters(path)
    again = Node.from_dict(fs.to_dict(), fs.file)
    assert again == fs and isinstance(again, FilterSet)


LEAVES = [n for p in FILES for n in load_filters(p).walk() if isinstance(n, PREDICATE_LEAVES)]
TREES = st.recursive(
    st.sampled_from(LEAVES),
    lambda kids: st.one_of(
        st.lists(kids, min_size=2, max_size=3).map(lambda xs: And(S, tuple(xs))),
        st.lists(kids, min_size=2, max_size=3).map(lambda xs: Or(S, tuple(xs))),
        kids.map(lambda x: Not(S, x)),
        kids.map(lambda x: AnyEntity(S, x, 10)),
    ),
    max_leaves=8,
)


@settings(max_examples=100, deadline=None)
@given(node=TREES)
def test_random_expressions_round_trip(node: Node) -> None:
    back = Node.from_dict(node.to_dict())
    assert back == node and back.to_dict() == node.to_dict()


def test_walk_is_pre_order_and_spans_are_kept() -> None:
    fs = load_filters_text(
        "filters:\n  - id: f\n    consumerId: c\n    outputTopic: t\n    conditions:\n"
        "      - {field: eventHeader.eventName, operator: equals, value: A}\n"
        "      - not: [{field: eventHeader.eventType, operator: isNull}]\n",
        "w.yaml",
    )
    keys = [n.key for n in fs.walk()]
    assert keys == [
        "filter_set",
        "filter",
        "and",
        "compare",
        "field_ref",
        "literal",
        "not",
        "is_null",
        "field_ref",
    ]
    ref = next(n for n in fs.walk() if isinstance(n, FieldRef))
    assert (ref.span.file, ref.span.line, ref.span.column) == ("w.yaml", 6, 17)


def test_flatten_logic_merges_nested_groups_and_drops_singletons() -> None:
    a, b, c = (Literal(S, x, "string") for x in "abc")
    node = And(S, (a, And(S, (b, Or(S, (c,)))), Not(S, And(S, (a,)))))
    assert flatten_logic(node) == And(S, (a, b, c, Not(S, a)))


def test_drop_disabled() -> None:
    fs = load_filters_text(
        "filters:\n"
        "  - {id: a, consumerId: c, outputTopic: t1, enabled: false, conditions: "
        "[{field: eventHeader.eventType, operator: isNull}]}\n"
        "  - {id: b, consumerId: c, outputTopic: t2, conditions: "
        "[{field: eventHeader.eventType, operator: isNull}]}\n"
    )
    assert [f.id for f in drop_disabled(fs).filters] == ["b"]
