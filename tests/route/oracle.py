"""An independent routing oracle: which topics an event must reach, read from docs/filter-language.md.

Deliberately plain and slow: the filters YAML is read with ``yaml.safe_load`` and every condition is
evaluated straight from the documented semantics, with no code from the project's loader, IR or
compiler, so a compiler bug makes the routing tests fail instead of agreeing with itself.
Truth values are SQL's: ``True``, ``False`` and ``None`` for UNKNOWN.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

import yaml

Truth = bool | None

LONG_FIELDS = {"eventHeader.createdDate", "eventHeader.savedDate", "sourceMetadata.timestamp"}
_HEADER_FIELDS = {"uuid", "eventName", "createdDate", "savedDate", "eventType"}
_SOURCE_FIELDS = {"table", "operation", "timestamp"}
_ENTITY = re.compile(r"eventBody\.entities\[(\d+|\*)\]\.(.+)", re.S)
_NUMBER_TEXT = re.compile(r"[ \t\n]*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)[ \t\n]*")
_TEN_PLACES = Decimal("1E-10")


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 core schema where it matters here: only true/false are booleans, dates stay text."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


# --- three-valued logic -------------------------------------------------------------------------


def _and(a: Truth, b: Truth) -> Truth:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _or(a: Truth, b: Truth) -> Truth:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def _not(a: Truth) -> Truth:
    return None if a is None else not a


# --- values -------------------------------------------------------------------------------------


def _number(text: Any) -> Decimal | None:
    """Flink's TRY_CAST(x AS DECIMAL(38, 10)): NULL for anything that is not plain number text."""
    if text is None:
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        return Decimal(text)
    m = _NUMBER_TEXT.fullmatch(str(text))
    if not m:
        return None
    try:
        d = Decimal(m.group(1)).quantize(_TEN_PLACES, rounding=ROUND_HALF_UP)
    except InvalidOperation:  # too many digits to quantize: far beyond 28 integer digits
        return None
    return None if abs(d) >= Decimal(10) ** 28 else d


_ISO_TEXT = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", re.ASCII)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _iso_timestamp(text: str) -> Decimal | None:
    """Epoch ms of the documented ISO-8601 form (``2024-05-01T08:00:00.25Z``, ``...+05:30``), by
    ``strptime`` (which refuses February 30, year 0000, hour 24), or None."""
    m = _ISO_TEXT.fullmatch(text)
    if m is None:
        return None
    try:
        local = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
        zone = UTC if m.group(3) == "Z" else datetime.strptime(m.group(3), "%z").tzinfo
        instant = local.replace(tzinfo=zone)
    except ValueError:
        return None
    whole_us = (instant - _EPOCH) // timedelta(microseconds=1)
    return Decimal(whole_us) / 1000 + Decimal("0." + (m.group(2) or "0")) * 1000


def _timestamp_literal(v: Any) -> Decimal:
    if isinstance(v, int) or re.fullmatch(r"[+-]?\d+", str(v)):
        return Decimal(v)
    ms = _iso_timestamp(str(v))
    assert ms is not None, f"timestamp literal {v!r} is not ISO-8601 with an offset"
    return ms


def _utf16(s: str) -> bytes:
    return s.encode("utf-16-be")  # big-endian bytes sort as UTF-16 code units do (Java's order)


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    """The documented dialect in Python terms: ``.`` excludes Java's line terminators, ``$`` is the
    very end of the text, ``\\d \\w \\s`` are ASCII."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]" or pattern[i + 1 : i + 3] == "^]":
                out.append(pattern[i : i + (2 if pattern[i + 1] == "]" else 3)])
                i += len(out[-1])
                continue
        elif ch == ".":
            ch = "[^\n\r\u0085\u2028\u2029]"
        elif ch == "$":
            ch = r"\Z"
        out.append(ch)
        i += 1
    return re.compile("".join(out), re.ASCII)


# --- fields -------------------------------------------------------------------------------------


def _map_key(rest: str) -> str:
    """What follows ``updatedAttributes``: ``.the.key`` verbatim, or ``['it\\'s']`` unescaped."""
    if rest.startswith("."):
        return rest[1:]
    assert rest.startswith("['") and rest.endswith("']"), rest
    return re.sub(r"\\(.)", r"\1", rest[2:-2], flags=re.S)


def _entity_field(entity: dict[str, Any] | None, rest: str) -> Any:
    if entity is None:
        return None
    if rest in ("entityType", "entityId"):
        return entity.get(rest)
    assert rest.startswith("updatedAttributes"), rest
    return (entity.get("updatedAttributes") or {}).get(_map_key(rest[len("updatedAttributes") :]))


def _read(event: dict[str, Any], path: str, entity: dict[str, Any] | None) -> Any:
    """The raw value at ``path``; ``entity`` is the one a ``[*]`` segment stands for."""
    m = _ENTITY.fullmatch(path)
    if m:
        if m.group(1) != "*":
            entities = (event.get("eventBody") or {}).get("entities") or []
            n = int(m.group(1))
            entity = entities[n] if n < len(entities) else None
        return _entity_field(entity, m.group(2))
    section, _, name = path.partition(".")
    allowed = {"eventHeader": _HEADER_FIELDS, "sourceMetadata": _SOURCE_FIELDS}[section]
    assert name in allowed, path
    return (event.get(section) or {}).get(name)


# --- conditions ---------------------------------------------------------------------------------


def _value_type(cond: dict[str, Any]) -> str:
    if "valueType" in cond:
        return str(cond["valueType"])
    if cond["field"] in LONG_FIELDS:
        return "number"
    sample = next((cond[k] for k in ("value", "min") if k in cond), (cond.get("values") or [None])[0])
    if isinstance(sample, bool):
        return "boolean"
    if isinstance(sample, int | float):
        return "number"
    return "string"


def _literal(v: Any, vt: str) -> Any:
    if vt == "number":
        return Decimal(str(v))
    if vt == "timestamp":
        return _timestamp_literal(v)
    if vt == "boolean":
        return "true" if v is True or str(v) == "true" else "false"
    return str(v)


def _operand(raw: Any, vt: str) -> Any:
    if vt == "timestamp":
        number = _number(raw)
        return number if number is not None or not isinstance(raw, str) else _iso_timestamp(raw)
    if vt == "number":
        return _number(raw)
    return None if raw is None else str(raw)


def _compare(x: Any, v: Any, op: str, vt: str) -> bool:
    if vt == "string":
        x, v = _utf16(x), _utf16(v)
    return {
        "equals": x == v,
        "greaterThan": x > v,
        "lessThan": x < v,
        "greaterThanOrEqual": x >= v,
        "lessThanOrEqual": x <= v,
    }[op]


def _condition(cond: dict[str, Any], event: dict[str, Any], entity: dict[str, Any] | None) -> Truth:
    op, vt = cond["operator"], _value_type(cond)
    raw = _read(event, cond["field"], entity)
    # "x IS [NOT] NULL" on the field itself: a valueType (which the validator lets through) does not
    # make non-number text NULL here. The docs leave this open; this is the engine's reading.
    if op == "isNull":
        return raw is None
    if op == "isNotNull":
        return raw is not None
    x = _operand(raw, vt)
    if x is None:
        return None
    if op in ("in", "notIn"):
        hit = any(_compare(x, _literal(v, vt), "equals", vt) for v in cond["values"])
        return hit if op == "in" else not hit
    if op == "between":
        return _compare(x, _literal(cond["min"], vt), "greaterThanOrEqual", vt) and _compare(
            x, _literal(cond["max"], vt), "lessThanOrEqual", vt
        )
    if op == "matches":
        return _regex(str(cond["value"])).search(x) is not None
    return _compare(x, _literal(cond["value"], vt), op, vt)


def _uses_star(cond: dict[str, Any]) -> bool:
    return "field" in cond and "entities[*]" in cond["field"]


class Oracle:
    """The filters of one YAML text, evaluated by the documented rules."""

    def __init__(self, text: str) -> None:
        doc = yaml.load(text, Loader=_Yaml12Loader)  # a SafeLoader subclass
        self.max_entities = int((doc.get("settings") or {}).get("maxEntities", 10))
        self.filters = [f for f in doc["filters"] if f.get("enabled", True) is not False]

    def _entities(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        return ((event.get("eventBody") or {}).get("entities") or [])[: self.max_entities]

    def _items(
        self, items: list[dict[str, Any]], default: str, event: dict[str, Any], entity: dict[str, Any] | None
    ) -> Truth:
        """Items joined by their logicalOperator (or ``default``); AND binds tighter than OR."""
        result: Truth = False
        run: Truth = True
        for i, item in enumerate(items):
            join = item.get("logicalOperator", default) if i else "AND"
            if join == "OR":
                result, run = _or(result, run), True
            run = _and(run, self._item(item, event, entity))
        return _or(result, run)

    def _item(self, item: dict[str, Any], event: dict[str, Any], entity: dict[str, Any] | None) -> Truth:
        if "any" in item:
            return self._items(item["any"], "OR", event, entity)
        if "all" in item:
            return self._items(item["all"], "AND", event, entity)
        if "not" in item:
            return _not(self._items(item["not"], "AND", event, entity))
        if "anyEntity" in item:  # one entity for every [*] inside; two-valued
            return any(self._items(item["anyEntity"], "AND", event, e) is True for e in self._entities(event))
        if _uses_star(item) and entity is None:  # some entity satisfies it; two-valued
            return any(_condition(item, event, e) is True for e in self._entities(event))
        return _condition(item, event, entity)

    def filter_truth(self, flt: dict[str, Any], event: dict[str, Any]) -> Truth:
        return self._items(flt["conditions"], str(flt.get("conditionLogic", "AND")), event, None)

    def matching_ids(self, event: dict[str, Any]) -> list[str]:
        """Ids of the enabled filters whose conditions are TRUE, in file order."""
        return [f["id"] for f in self.filters if self.filter_truth(f, event) is True]

    def topic_of(self, filter_id: str) -> str:
        return next(str(f["outputTopic"]) for f in self.filters if f["id"] == filter_id)

    def topics(self, event: dict[str, Any]) -> list[str]:
        return [f["outputTopic"] for f in self.filters if self.filter_truth(f, event) is True]


def expected_routing(text: str, events: list[dict[str, Any]], topics: list[str]) -> dict[str, Counter[str]]:
    """Topic -> Counter of the event uuids the filters in ``text`` send there (every topic listed)."""
    oracle = Oracle(text)
    out: dict[str, Counter[str]] = {t: Counter() for t in topics}
    for e in events:
        for topic in oracle.topics(e):
            out[topic][e["eventHeader"]["uuid"]] += 1
    return out
