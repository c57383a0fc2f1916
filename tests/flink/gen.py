"""Random filters (seed YAML format) and seed-shaped events for the differential tests.

Every generator takes a :class:`Draw`, so the same code runs under hypothesis (``HypoDraw``:
shrinkable, for small examples) and from a seeded ``random.Random`` (``RandomDraw``: for the
bulk run of hundreds of filters over thousands of events, which hypothesis cannot hold in one
example). Vocabularies are small and shared between filters and events so that conditions
match often, and they are salted with the hard cases: NULLs, missing keys, out-of-range indexes,
non-numeric text in number tests, quotes, backslashes, non-BMP characters.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from hypothesis import strategies as st

T = TypeVar("T")


class Draw(Protocol):
    def choice(self, seq: Sequence[T]) -> T: ...
    def integer(self, lo: int, hi: int) -> int: ...


class RandomDraw:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choice(self, seq: Sequence[T]) -> T:
        return seq[self.rng.randrange(len(seq))]

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)


class HypoDraw:
    """Draws through hypothesis: choices shrink towards the first element, integers towards lo."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def choice(self, seq: Sequence[T]) -> T:
        return seq[self.data.draw(st.integers(0, len(seq) - 1))]

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))


def chance(d: Draw, percent: int) -> bool:
    """True with about ``percent``% probability; shrinks to False."""
    return d.integer(0, 99) >= 100 - percent


# ---- shared vocabulary ---------------------------------------------------------------------------

EVENT_NAMES = ["LoanCreated", "LoanUpdated", "CarCreated", "ServiceDone", "O'Brien\\Event", "lóan😀"]
EVENT_TYPES = [None, "outbox", "loan", "LOAN"]
TABLES = [None, "loans", "cars", "service_records"]
OPERATIONS = [None, "INSERT", "UPDATE", "DELETE"]
ENTITY_TYPES = ["Loan", "Car", "Service", "loan"]
ATTR_KEYS = ["loan.loanAmount", "status", "amount", "flag", "ts", "name", "a'b", "x\\y"]
MISSING_KEYS = ["missingKey", "loan.missing"]
NUMBER_TEXTS = [
    "12", "12.5", "-3", "0", "100000", "1e3", " 12 ", "12d", "12f", "12L", "NaN", "Infinity",
    "0012", "1.00000000001", "99999999999999999999999999999", "+5", ".5", "5.", "0x10", "1_000",
    "abc", "", "-0", "12.50",
]  # fmt: skip
BOOL_TEXTS = ["true", "false", "TRUE", "True", "1", "0", "yes", "t", " true"]
TS_TEXTS = [
    "1700000000000", "1700000005000", "1699999999999", "2024-01-02T03:04:05Z", "1.7e12",
    # ISO-8601 as capture writes it (any fraction length, Z), with offsets, and near misses
    "2023-11-14T22:13:20Z", "2023-11-14T22:13:20.5Z", "2023-11-14T22:13:19.999999Z",
    "2023-11-14T22:13:25.000001Z", "2023-11-14T22:13:20.123456789Z", "2023-11-15T03:43:20+05:30",
    "2023-11-14T18:13:25.25-04:00", "2024-02-29T23:59:59.9Z", "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z", "2023-02-29T00:00:00Z", "2023-04-31T00:00:00Z", "0000-01-01T00:00:00Z",
    "2023-11-14T24:00:00Z", "2023-11-14T22:13:60Z", "2023-11-14T22:13:20+24:00", "2023-11-14 22:13:20Z",
    "2023-11-14T22:13:20", "2023-11-14T22:13:20.Z", "2023-11-14T22:13:20Z\n", "-0043-03-15T12:00:00Z",
    "+10000-01-01T00:00:00Z", "infinity", "2023-11-14T22:13:20.1234567890Z", "２023-11-14T22:13:20Z",
]  # fmt: skip
TS_LITERALS = [
    *[1700000000000, 1700000005000, 1700000010000, 1699999999999],
    "2023-11-14T22:13:20Z", "2023-11-14T22:13:25.000+00:00", "2023-11-14T22:13:20.5Z",
    "2023-11-15T03:43:25.000001+05:30", "2023-11-14T18:13:19.999999999-04:00", "1700000002500",
]  # fmt: skip
STRING_TEXTS = [
    "ACTIVE", "active", "PENDING", "O'Brien", "back\\slash", 'say "hi"', "", " ", "a\nb",
    "héllo", "😀x", "100%", "a_b", "line\r", "Zed", "abc123",
]  # fmt: skip
CREATED = [1700000000000, 1700000005000, 1700000010000, 1699999999999]


def attr_value(d: Draw) -> str | None:
    kind = d.integer(0, 9)
    if kind == 0:
        return None
    if kind <= 3:
        return d.choice(NUMBER_TEXTS)
    if kind <= 5:
        return d.choice(STRING_TEXTS)
    if kind == 6:
        return d.choice(BOOL_TEXTS)
    return d.choice(TS_TEXTS) if kind == 7 else d.choice([*NUMBER_TEXTS[:8], *STRING_TEXTS[:6]])


def gen_event(d: Draw, n: int) -> dict[str, Any]:
    """A seed-shaped raw event (the fastavro dict shape); ``n`` makes its uuid unique."""
    entities = []
    for i in range(d.choice([0, 1, 1, 2, 2, 3, 1, 5])):
        attrs: dict[str, str | None] = {}
        for _ in range(d.integer(0, 4)):
            attrs[d.choice(ATTR_KEYS)] = attr_value(d)
        entities.append(
            {"entityType": d.choice(ENTITY_TYPES), "entityId": f"E{n}-{i}", "updatedAttributes": attrs}
        )
    return {
        "eventHeader": {
            "uuid": f"u{n}",
            "eventName": d.choice(EVENT_NAMES),
            "createdDate": d.choice(CREATED),
            "savedDate": d.choice(CREATED) + 1,
            "eventType": d.choice(EVENT_TYPES),
        },
        "eventBody": {"entities": entities},
        "sourceMetadata": {
            "table": d.choice(TABLES),
            "operation": d.choice(OPERATIONS),
            "timestamp": d.choice([None, *CREATED]),
        },
    }


# ---- filters -------------------------------------------------------------------------------------

STRING_FIELDS = [
    ("eventHeader.eventName", EVENT_NAMES),
    ("eventHeader.eventType", EVENT_TYPES[1:]),
    ("sourceMetadata.table", TABLES[1:]),
    ("sourceMetadata.operation", OPERATIONS[1:]),
]
LONG_FIELDS = ["eventHeader.createdDate", "eventHeader.savedDate", "sourceMetadata.timestamp"]
ENTITY_INDEXES = ["0", "0", "1", "2", "7", "*"]
ORDERING = ["greaterThan", "lessThan", "greaterThanOrEqual", "lessThanOrEqual"]
NUMBER_LITERALS = [12, 12.5, -3, 0, 100000, 1000, 5, 0.5, 99.99, 1.0000000001, 1e3]
REGEX_ATOMS = [
    "a",
    "A",
    "L",
    "o",
    "1",
    "\\d",
    "\\w",
    "\\s",
    ".",
    "[0-9]",
    "[A-Z]",
    "[a-z]",
    "'",
    "\\\\",
    "\\.",
]


def gen_regex(d: Draw) -> str:
    """A pattern from the portable subset: atoms, classes, quantifiers, groups, anchors, (?i)."""
    parts: list[str] = []
    for _ in range(d.integer(1, 4)):
        atom = d.choice(REGEX_ATOMS)
        if chance(d, 15):
            atom = f"({atom}|{d.choice(REGEX_ATOMS)})"
        parts.append(atom + d.choice(["", "", "*", "+", "?", "{1,3}"]))
    body = "".join(parts)
    if chance(d, 30):
        body = "^" + body
    if chance(d, 30):
        body += "$"
    return ("(?i)" if chance(d, 15) else "") + body


def _entity_path(d: Draw, star_ok: bool) -> tuple[str, str]:
    idx = d.choice(ENTITY_INDEXES if star_ok else ENTITY_INDEXES[:-1])
    base = f"eventBody.entities[{idx}]"
    leaf = d.choice(["entityType", "entityId", "attr", "attr", "attr", "missing"])
    if leaf == "attr":
        return f"{base}.updatedAttributes.{d.choice(ATTR_KEYS)}", "attr"
    if leaf == "missing":
        return f"{base}.updatedAttributes.{d.choice(MISSING_KEYS)}", "attr"
    return f"{base}.{leaf}", leaf


def gen_condition(d: Draw, *, star_ok: bool = True, entity_only: bool = False) -> dict[str, Any]:
    """One condition: a field, an operator valid for it, and literal(s) of a valueType."""
    where = "entity" if entity_only else d.choice(["string", "long", "entity", "entity", "entity"])
    if where == "string":
        field, pool = d.choice(STRING_FIELDS)
        kind = "string"
    elif where == "long":
        field, pool, kind = d.choice(LONG_FIELDS), [], "long"
    else:
        field, kind = _entity_path(d, star_ok) if not entity_only else _star_path(d)
        pool = {"entityType": ENTITY_TYPES, "entityId": ["E1-0", "E2-1", "E3-0"]}.get(kind, STRING_TEXTS)

    if kind == "long":
        vt = d.choice(["number", "timestamp", None])
    elif kind == "attr":
        # timestamp 1 in 10: its ISO reading is a large expression that Flink takes long to compile
        vt = d.choice(["string", "string", "number", "number", "number", "number", "boolean", "boolean"])
        vt = "timestamp" if chance(d, 10) else vt
    else:
        vt = "string"
    cond: dict[str, Any] = {"field": field}
    op = d.choice(
        ["equals", "in", "notIn", *ORDERING, "between", "matches", "isNull", "isNotNull"]
        if vt in ("string", None) and kind != "long"
        else ["equals", "in", "notIn", *ORDERING, "between", "isNull", "isNotNull"]
    )
    if vt == "boolean" and op in (*ORDERING, "between"):
        op = "equals"
    cond["operator"] = op
    if vt is not None and not (vt == "string" and chance(d, 50)):
        cond["valueType"] = vt

    def lit() -> Any:
        if vt == "boolean":
            return d.choice([True, False, "true", "false"])
        if vt == "timestamp":
            return d.choice(TS_LITERALS)
        if vt == "number" or kind == "long":
            return d.choice(NUMBER_LITERALS if kind != "long" else [*CREATED, 1700000000000.5])
        return d.choice(list(pool) + STRING_TEXTS[:6])

    if op in ("isNull", "isNotNull"):
        pass
    elif op == "matches":
        cond["value"] = gen_regex(d)
    elif op in ("in", "notIn"):
        cond["values"] = [lit() for _ in range(d.integer(1, 3))]
    elif op == "between":
        a, b = lit(), lit()
        cond["min"], cond["max"] = a, b  # min > max is rejected by validation: the caller drops it
    else:
        cond["value"] = lit()
    return cond


def _star_path(d: Draw) -> tuple[str, str]:
    leaf = d.choice(["entityType", "attr", "attr", "missing"])
    if leaf == "attr":
        return f"eventBody.entities[*].updatedAttributes.{d.choice(ATTR_KEYS)}", "attr"
    if leaf == "missing":
        return f"eventBody.entities[*].updatedAttributes.{d.choice(MISSING_KEYS)}", "attr"
    return "eventBody.entities[*].entityType", "entityType"


def gen_items(d: Draw, depth: int, *, entity_only: bool = False, in_any_entity: bool = False) -> list[Any]:
    items: list[Any] = []
    for i in range(d.integer(1, 3)):
        if depth > 0 and chance(d, 25):
            kind = d.choice(["any", "all", "not"] if in_any_entity else ["any", "all", "not", "anyEntity"])
            inner_entity = entity_only or kind == "anyEntity"
            item: dict[str, Any] = {
                kind: gen_items(
                    d, depth - 1, entity_only=inner_entity, in_any_entity=in_any_entity or inner_entity
                )
            }
        else:
            item = gen_condition(d, star_ok=not in_any_entity, entity_only=entity_only)
        if i > 0 and chance(d, 40):
            item["logicalOperator"] = d.choice(["AND", "OR"])
        items.append(item)
    return items


def gen_filter(d: Draw, n: int, *, max_depth: int = 2) -> dict[str, Any]:
    """A filter in the seed's format with id ``f<n>`` and its own output topic.

    Nesting is drawn up to ``max_depth``, shallow more often than deep: Flink's planning time
    grows with expression size, and most bugs show up in small filters.
    """
    f: dict[str, Any] = {
        "id": f"f{n}",
        "name": f"random filter {n}",
        "consumerId": f"consumer-{n}",
        "outputTopic": f"filtered-f{n}-events",
        "enabled": True,
        "conditions": gen_items(d, depth=min(max_depth, d.choice([0, 1, 1, 1, 2]))),
    }
    if chance(d, 70):
        f["conditionLogic"] = d.choice(["AND", "OR"])
    return f


def filters_yaml(filters: Sequence[dict[str, Any]]) -> str:
    """The YAML text of a filter file. JSON is YAML; one filter per line keeps diffs readable."""
    body = ",\n".join("  " + json.dumps(f, ensure_ascii=False) for f in filters)
    return '{"filters": [\n' + body + "\n]}\n"
