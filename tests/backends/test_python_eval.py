"""The embedded engine: SQL three-valued logic and Flink value semantics.

Unit cases pin each rule; a hypothesis test compares the generated code (both the three-valued
predicates and the two-valued hot path) with a plain tree-walking reference interpreter.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdcrouter.backends import sqlsem
from cdcrouter.backends.events import normalize_event
from cdcrouter.backends.python_eval import compile_filterset
from cdcrouter.filters import load_filters_text
from cdcrouter.filters.regex import check_regex
from cdcrouter.filters.span import Span
from cdcrouter.ir.nodes import (
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

S = Span("t", 1, 1)


def one_filter(conditions: str, logic: str = "AND") -> Any:
    text = (
        "filters:\n  - id: f\n    consumerId: c\n    outputTopic: t\n"
        f"    conditionLogic: {logic}\n    conditions:\n" + conditions
    )
    return compile_filterset(load_filters_text(text, "t.yaml"))


def ev(name: str = "E", attrs: dict[str, Any] | None = None, entities: int = 1, **kw: Any) -> dict[str, Any]:
    ents = [
        {"entityType": "Loan", "entityId": f"L{i}", "updatedAttributes": dict(attrs or {})}
        for i in range(entities)
    ]
    return normalize_event({"eventHeader": {"eventName": name, **kw}, "eventBody": {"entities": ents}})


AMOUNT_GT = (
    "      - {field: 'eventBody.entities[0].updatedAttributes.amount', operator: greaterThan, value: 10}\n"
)


def test_null_comparison_is_unknown_and_not_of_unknown_is_unknown() -> None:
    c = one_filter(AMOUNT_GT)
    assert c.predicates["f"](ev(attrs={})) is None  # missing map key reads NULL
    assert c.match(ev(attrs={})) == []
    neg = one_filter("      - not:\n    " + AMOUNT_GT.replace("      - ", "          - ", 1))
    assert neg.predicates["f"](ev(attrs={})) is None  # NOT UNKNOWN is UNKNOWN
    assert neg.match(ev(attrs={})) == []
    assert neg.match(ev(attrs={"amount": "5"})) == ["f"]


def test_out_of_range_index_reads_null() -> None:
    c = one_filter("      - {field: 'eventBody.entities[3].entityType', operator: isNull}\n")
    assert c.match(ev(entities=1)) == ["f"]
    assert c.match(ev(entities=4)) == []


def test_three_valued_and_or() -> None:
    unknown = AMOUNT_GT
    true = "      - {field: eventHeader.eventName, operator: equals, value: E}\n"
    false = "      - {field: eventHeader.eventName, operator: equals, value: Z}\n"
    e = ev(attrs={})
    assert one_filter(unknown + false).predicates["f"](e) is False  # UNKNOWN AND FALSE
    assert one_filter(unknown + true).predicates["f"](e) is None  # UNKNOWN AND TRUE
    assert one_filter(unknown + true, "OR").predicates["f"](e) is True  # UNKNOWN OR TRUE
    assert one_filter(unknown + false, "OR").predicates["f"](e) is None  # UNKNOWN OR FALSE


def test_and_binds_tighter_than_or() -> None:
    a = "      - {field: eventHeader.eventName, operator: equals, value: A}\n"
    b = "      - {field: eventHeader.eventType, operator: equals, value: B, logicalOperator: OR}\n"
    c = "      - {field: sourceMetadata.table, operator: equals, value: C, logicalOperator: AND}\n"
    f = one_filter(a + b + c)  # a OR (b AND c)
    base = {"eventHeader": {"eventName": "A"}, "sourceMetadata": {"table": "x"}}
    assert f.match(normalize_event(base)) == ["f"]  # a alone is enough
    only_b = {"eventHeader": {"eventName": "x", "eventType": "B"}, "sourceMetadata": {"table": "x"}}
    assert f.match(normalize_event(only_b)) == []  # b without c is not
    b_and_c = {"eventHeader": {"eventName": "x", "eventType": "B"}, "sourceMetadata": {"table": "C"}}
    assert f.match(normalize_event(b_and_c)) == ["f"]


def test_number_comparison_uses_try_cast_decimal() -> None:
    c = one_filter(AMOUNT_GT)
    assert c.match(ev(attrs={"amount": "10.0000000001"})) == ["f"]
    assert c.match(ev(attrs={"amount": "10.00000000004"})) == []  # rounds to scale 10
    assert c.match(ev(attrs={"amount": " 11\n"})) == ["f"]  # Flink trims ' ', \n, \t
    for bad in ("lots", "1_000", "NaN", "0x10", "12L", "\u00a011", ""):
        assert c.predicates["f"](ev(attrs={"amount": bad})) is None, bad


def test_parse_decimal_matches_flink_measurements() -> None:
    # Measured on PyFlink 2.2.1: SELECT CAST(TRY_CAST('<s>' AS DECIMAL(38,10)) AS STRING)
    measured = {
        "1.00000000005": "1.0000000001",
        "1.000000000049": "1.0000000000",
        "-1.00000000005": "-1.0000000001",
        "\t12\n": "12.0000000000",
        "1E+3": "1000.0000000000",
        ".5": "0.5000000000",
        "5.": "5.0000000000",
        "+5": "5.0000000000",
        "１２": "12.0000000000",
        "1e-11": "0.0000000000",
        "9999999999999999999999999999": "9999999999999999999999999999.0000000000",
        "1e27": "1000000000000000000000000000.0000000000",
        "0012": "12.0000000000",
        # more than 28 significant digits below 10^28: abs() in the default context had rounded
        # them to 1E+28 and read NULL
        "9999999999999999999999999999.99999999994": "9999999999999999999999999999.9999999999",
        "-9999999999999999999999999999.99999999994": "-9999999999999999999999999999.9999999999",
    }
    for text, flink in measured.items():
        assert sqlsem.parse_decimal(text) == Decimal(flink), text
    for text in (
        "12L",
        "12D",
        "12f",
        "1_0",
        "NaN",
        "Infinity",
        "",
        " ",
        "1.2.3",
        "12e",
        "e3",
        "1e28",
        "1,000",
    ):
        assert sqlsem.parse_decimal(text) is None, text
    for text in ("99999999999999999999999999999", "9999999999999999999999999999.99999999999", "\x0b12"):
        assert sqlsem.parse_decimal(text) is None, text


def test_string_order_is_java_utf16_order() -> None:
    c = one_filter('      - {field: eventHeader.eventName, operator: greaterThan, value: "\uffee"}\n')
    assert c.match(ev("\U0001f600")) == []  # a surrogate pair sorts below U+FFEE in UTF-16
    assert c.match(ev("\uffef")) == ["f"]


def test_regex_is_a_partial_match_unless_anchored() -> None:
    c = one_filter("      - {field: eventHeader.eventName, operator: matches, value: 'oan'}\n")
    assert c.match(ev("LoanCreated")) == ["f"]
    anchored = one_filter("      - {field: eventHeader.eventName, operator: matches, value: '^Loan$'}\n")
    assert anchored.match(ev("LoanCreated")) == [] and anchored.match(ev("Loan")) == ["f"]
    assert anchored.match(ev("Loan\n")) == []  # $ is the end of the text, not before a final newline


def test_entities_star_tests_the_first_ten_entities() -> None:
    c = one_filter(
        "      - {field: 'eventBody.entities[*].updatedAttributes.x', operator: equals, value: hit}\n"
    )
    e = ev(entities=12)
    e["eventBody"]["entities"][9]["updatedAttributes"]["x"] = "hit"
    assert c.match(e) == ["f"]
    e["eventBody"]["entities"][9]["updatedAttributes"]["x"] = "miss"
    e["eventBody"]["entities"][10]["updatedAttributes"]["x"] = "hit"
    assert c.match(e) == []  # the 11th entity is beyond the bound (as in the unrolled SQL)
    assert c.predicates["f"](ev(entities=0)) is False  # never UNKNOWN


def test_disabled_filters_never_match_and_order_is_file_order() -> None:
    text = "filters:\n" + "".join(
        f"  - {{id: {i}, consumerId: c, outputTopic: t{i}, enabled: {str(i != 'b').lower()}, conditions: "
        "[{field: eventHeader.eventName, operator: isNotNull}]}\n"
        for i in ("c", "b", "a")
    )
    assert compile_filterset(load_filters_text(text)).match(ev()) == ["c", "a"]


# ---- property: generated code == reference interpreter -----------------------------------------


def _read(ref: FieldRef, event: dict[str, Any], entity: dict[str, Any] | None) -> Any:
    cur: Any = entity if ref.root == "entity" else event
    for step in ref.steps:
        if cur is None:
            return None
        if isinstance(step, Attr):
            cur = cur.get(step.name)
        elif isinstance(step, Index):
            cur = cur[step.index] if step.index < len(cur) else None
        elif isinstance(step, Key):
            cur = cur.get(step.key)
    return cur


def ref_eval(n: Node, event: dict[str, Any], entity: dict[str, Any] | None = None) -> Any:
    """Straightforward SQL semantics, one node at a time: the oracle."""
    if isinstance(n, FieldRef):
        return _read(n, event, entity)
    if isinstance(n, Literal):
        return n.value
    if isinstance(n, TryCast):
        v = ref_eval(n.operand, event, entity)
        if isinstance(v, int):
            return Decimal(v)
        return None if v is None else sqlsem.parse_decimal(v)
    if isinstance(n, Compare):
        a, b = ref_eval(n.left, event, entity), ref_eval(n.right, event, entity)
        if a is None:
            return None
        if isinstance(a, str) and n.op not in ("=", "<>"):
            a, b = sqlsem.utf16_key(a), sqlsem.utf16_key(b)
        return {"=": a == b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "<>": a != b}[n.op]
    if isinstance(n, InList):
        a = ref_eval(n.operand, event, entity)
        return None if a is None else (a in {v.value for v in n.values}) != n.negated
    if isinstance(n, Between):
        a = ref_eval(n.operand, event, entity)
        if a is None:
            return None
        lo, hi = n.low.value, n.high.value
        if isinstance(a, str):
            a, lo, hi = sqlsem.utf16_key(a), sqlsem.utf16_key(lo), sqlsem.utf16_key(hi)  # type: ignore[arg-type]
        return lo <= a <= hi  # type: ignore[operator]
    if isinstance(n, RegexMatch):
        import re

        a = ref_eval(n.operand, event, entity)
        return None if a is None else re.search(n.python, a, re.ASCII) is not None
    if isinstance(n, IsNull):
        return (ref_eval(n.operand, event, entity) is None) != n.negated
    if isinstance(n, Not):
        v = ref_eval(n.operand, event, entity)
        return None if v is None else not v
    if isinstance(n, And):
        vs = [ref_eval(o, event, entity) for o in n.operands]
        return False if False in vs else (None if None in vs else True)
    if isinstance(n, Or):
        vs = [ref_eval(o, event, entity) for o in n.operands]
        return True if True in vs else (None if None in vs else False)
    if isinstance(n, AnyEntity):
        ents = event["eventBody"]["entities"][: n.limit]
        return any(ref_eval(n.predicate, event, e) is True for e in ents)
    raise AssertionError(n)


def _ref(root: str, steps: tuple[Any, ...], typ: str, nullable: bool) -> FieldRef:
    return FieldRef(S, root, steps, typ, nullable, "p")


EVENT_STRINGS = [
    _ref("event", (Attr("eventHeader"), Attr("eventName")), "string", False),
    _ref("event", (Attr("eventHeader"), Attr("eventType")), "string", True),
    _ref("event", (Attr("eventBody"), Attr("entities"), Index(1), Attr("entityType")), "string", True),
    _ref(
        "event",
        (Attr("eventBody"), Attr("entities"), Index(0), Attr("updatedAttributes"), Key("a")),
        "string",
        True,
    ),
]
ENTITY_STRINGS = [
    _ref("entity", (Attr("entityType"),), "string", False),
    _ref("entity", (Attr("updatedAttributes"), Key("a")), "string", True),
]
WORDS = ["", "a", "b", "ab", "1", "10", " 7 ", "x1", "é", "\U0001f600", "\uffee", "1e1", "-3.5"]
NUMS = [Decimal(x) for x in ("-3.5", "0", "1", "7", "10", "10.5")]
PATTERNS = [check_regex(p) for p in ("^a", "b$", "a.b", "[0-9]+", "(?i)^A", "^$")]


def leaf(refs: list[FieldRef]) -> st.SearchStrategy[Node]:
    strs = st.sampled_from(refs)
    nums = st.sampled_from(
        [TryCast(S, r, "decimal") for r in refs if r.nullable] or [TryCast(S, refs[0], "decimal")]
    )
    lit_s = st.sampled_from(WORDS).map(lambda w: Literal(S, w, "string"))
    lit_n = st.sampled_from(NUMS).map(lambda d: Literal(S, d, "decimal"))
    ops = st.sampled_from(["=", "<", "<=", ">", ">="])
    return st.one_of(
        st.builds(lambda o, a, b: Compare(S, o, a, b), ops, strs, lit_s),
        st.builds(lambda o, a, b: Compare(S, o, a, b), ops, nums, lit_n),
        st.builds(
            lambda a, v, neg: InList(S, a, tuple(v), neg),
            strs,
            st.lists(lit_s, min_size=1, max_size=3),
            st.booleans(),
        ),
        st.builds(
            lambda a, v: Between(S, a, *sorted(v, key=lambda x: x.value)),
            nums,
            st.lists(lit_n, min_size=2, max_size=2),
        ),
        st.builds(
            lambda a, p: RegexMatch(S, a, p.pattern, p.java, p.python), strs, st.sampled_from(PATTERNS)
        ),
        st.builds(lambda a, neg: IsNull(S, a, neg), strs, st.booleans()),
    )


def tree(refs: list[FieldRef], allow_any: bool) -> st.SearchStrategy[Node]:
    def extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
        options = [
            st.lists(children, min_size=2, max_size=3).map(lambda xs: And(S, tuple(xs))),
            st.lists(children, min_size=2, max_size=3).map(lambda xs: Or(S, tuple(xs))),
            children.map(lambda x: Not(S, x)),
        ]
        return st.one_of(*options)

    base = leaf(refs)
    if allow_any:
        base = st.one_of(base, tree(refs + ENTITY_STRINGS, False).map(lambda p: AnyEntity(S, p, 2)))
    return st.recursive(base, extend, max_leaves=6)


entity = st.fixed_dictionaries(
    {
        "entityType": st.sampled_from(WORDS),
        "entityId": st.just("id"),
        "updatedAttributes": st.dictionaries(
            st.sampled_from(["a", "b"]), st.one_of(st.none(), st.sampled_from(WORDS))
        ),
    }
)
event = st.builds(
    lambda name, typ, ents: {
        "eventHeader": {"uuid": "u", "eventName": name, "createdDate": 0, "savedDate": 0, "eventType": typ},
        "eventBody": {"entities": ents},
        "sourceMetadata": {"table": None, "operation": None, "timestamp": None},
    },
    st.sampled_from(WORDS),
    st.one_of(st.none(), st.sampled_from(WORDS)),
    st.lists(entity, max_size=3),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    conds=st.lists(tree(EVENT_STRINGS, True), min_size=1, max_size=4),
    events=st.lists(event, min_size=1, max_size=8),
)
def test_generated_code_agrees_with_the_reference_interpreter(
    conds: list[Node], events: list[dict[str, Any]]
) -> None:
    filters = tuple(Filter(S, f"f{i}", None, None, "c", f"t{i}", True, c) for i, c in enumerate(conds))
    compiled = compile_filterset(FilterSet(S, "t", "0" * 64, filters))
    for e in events:
        expected = [f.id for f in filters if ref_eval(f.condition, e) is True]
        assert compiled.match(e) == expected
        for f in filters:
            assert compiled.predicates[f.id](e) == ref_eval(f.condition, e)


def test_long_fields_compare_in_decimal_too() -> None:
    """Regression (differential run, seed 2): Flink casts IN-list literals to the operand type,
    so `savedDate IN (1700000000000.5)` matched 1700000000000 while Python said no. Every number
    test now runs in DECIMAL(38, 10) in both back ends."""
    fs = load_filters_text(
        "filters:\n  - id: f\n    consumerId: c\n    outputTopic: t\n    conditions:\n"
        "      - {field: eventHeader.savedDate, operator: in, values: [1700000000000.5, 1699999999999]}\n"
    )
    from cdcrouter.backends.flink_sql import where_clause

    assert where_clause(fs.filters[0]) == (
        "CAST(`eventHeader`.`savedDate` AS DECIMAL(38, 10)) IN (1700000000000.5, 1699999999999)"
    )
    c = compile_filterset(fs)
    assert c.match(ev(savedDate=1700000000000)) == []
    assert c.match(ev(savedDate=1699999999999)) == ["f"]
