"""Raw model -> typed IR, with every semantic check (the ``V`` diagnostics).

Decisions (documented in docs/filter-language.md):

* Combining a condition list: item *i* (i > 0) joins the item before it with its
  ``logicalOperator``, defaulting to the list's default (``conditionLogic`` for a filter's
  ``conditions``, OR in ``any:``, AND in ``all:``/``not:``/``anyEntity:``). AND binds tighter than
  OR, as in SQL: ``a, OR b, AND c`` is ``a OR (b AND c)``. A ``logicalOperator`` on the first
  item has nothing to join and is ignored.
* valueType defaults: ``number`` for a long field; otherwise taken from the YAML value
  (number -> number, true/false -> boolean, date/time -> timestamp), else ``string``.
* Numbers compare as DECIMAL(38, 10), long fields included; text that is not a number reads
  NULL (TRY_CAST), so the condition is UNKNOWN and the event does not match. Timestamps are
  epoch milliseconds, read from epoch-ms text or from ISO-8601 text (what capture writes).
* Booleans compare the canonical text ``true``/``false`` (what capture writes), no cast.
* One enabled filter per output topic: two would write every shared match twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from decimal import Decimal, InvalidOperation

from cdcrouter.backends.sqlsem import parse_iso_timestamp_ms
from cdcrouter.filters.diagnostics import Collector, closest
from cdcrouter.filters.raw import RawCondition, RawFilter, RawFilterSet, RawGroup, RawItem, RawScalar
from cdcrouter.filters.regex import RegexError, check_regex
from cdcrouter.filters.schema import PathError, resolve_path
from cdcrouter.filters.span import Span
from cdcrouter.ir.nodes import (
    DECIMAL_PRECISION,
    DECIMAL_SCALE,
    MAX_ENTITIES,
    And,
    AnyEntity,
    Between,
    Compare,
    FieldRef,
    Filter,
    FilterSet,
    InList,
    IsNull,
    Literal,
    Node,
    Not,
    Or,
    RegexMatch,
    TryCast,
)
from cdcrouter.naming import DEFAULT_RAW_TOPIC

RAW_TOPIC = DEFAULT_RAW_TOPIC
OPERATORS = (
    "equals",
    "in",
    "notIn",
    "greaterThan",
    "lessThan",
    "greaterThanOrEqual",
    "lessThanOrEqual",
    "between",
    "matches",
    "isNull",
    "isNotNull",
)
VALUE_TYPES = ("string", "number", "boolean", "timestamp")
_COMPARE_OPS = {
    "equals": "=",
    "greaterThan": ">",
    "lessThan": "<",
    "greaterThanOrEqual": ">=",
    "lessThanOrEqual": "<=",
}
_ORDERING = ("greaterThan", "lessThan", "greaterThanOrEqual", "lessThanOrEqual", "between")
_VALUE_KEYS = {
    "equals": ("value",),
    "greaterThan": ("value",),
    "lessThan": ("value",),
    "greaterThanOrEqual": ("value",),
    "lessThanOrEqual": ("value",),
    "matches": ("value",),
    "in": ("values",),
    "notIn": ("values",),
    "between": ("min", "max"),
    "isNull": (),
    "isNotNull": (),
}
TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
NUMBER_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DEC_LIMIT = Decimal(10) ** (DECIMAL_PRECISION - DECIMAL_SCALE)


class _Resolver:
    def __init__(self, diags: Collector) -> None:
        self.d = diags
        self.fid: str | None = None
        self.in_entity = False
        self.max_entities = MAX_ENTITIES

    def err(self, code: str, message: str, span: Span, hint: str | None = None) -> None:
        self.d.add(code, message, span, self.fid, hint)

    # ---- filter set ---------------------------------------------------------------------------

    def filterset(self, raw: RawFilterSet, text: str) -> FilterSet:
        if raw.max_entities is not None:
            v = raw.max_entities.value
            if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 100:
                self.max_entities = v
            else:
                self.err(
                    "V018",
                    f"settings.maxEntities must be a whole number from 1 to 100, not {v!r}",
                    raw.max_entities.span,
                    f"the default is {MAX_ENTITIES}; smaller plans faster in Flink",
                )
        filters: list[Filter] = []
        seen_ids: dict[str, Span] = {}
        topics: dict[str, tuple[str, Span]] = {}
        for rf in raw.filters:
            f = self.filter(rf)
            self.fid = rf.id.value if rf.id is not None and isinstance(rf.id.value, str) else None
            if self.fid is not None and rf.id is not None:
                if self.fid in seen_ids:
                    self.err(
                        "V011",
                        f"duplicate filter id '{self.fid}' (first defined at line {seen_ids[self.fid].line})",
                        rf.id.span,
                        "give every filter a unique id",
                    )
                else:
                    seen_ids[self.fid] = rf.id.span
            enabled = not (rf.enabled is not None and rf.enabled.value is False)
            topic_node = rf.output_topic
            if enabled and topic_node is not None and isinstance(topic_node.value, str):
                topic = topic_node.value
                if topic in topics:
                    other, ospan = topics[topic]
                    self.err(
                        "V014",
                        f"outputTopic '{topic}' is already written by enabled filter "
                        f"'{other}' (line {ospan.line}); each shared match would be written twice",
                        topic_node.span,
                        "merge the two filters' conditions with `any:` into one filter, or use another topic",
                    )
                else:
                    topics[topic] = (str(self.fid), topic_node.span)
            if f is not None:
                filters.append(f)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return FilterSet(raw.span, raw.file, digest, tuple(filters))

    def text(self, s: RawScalar | None, what: str, required: bool = True) -> str | None:
        if s is None:
            return None
        if not isinstance(s.value, str) or (required and not s.value.strip()):
            self.err("Y002", f"{what} must be a non-empty string", s.span, f"write `{what}: some-text`")
            return None
        return s.value

    def filter(self, rf: RawFilter) -> Filter | None:
        self.fid = str(rf.id.value) if rf.id is not None and rf.id.value is not None else None
        fid = self.text(rf.id, "id")
        if fid is not None and not ID_RE.match(fid):
            self.err(
                "V012",
                f"filter id '{fid}' must be 1-100 characters of letters, digits, '.', '_' or '-'",
                rf.id.span if rf.id else rf.span,
                "use something like loan-created-filter",
            )
        consumer = self.text(rf.consumer_id, "consumerId")
        topic = self.text(rf.output_topic, "outputTopic")
        if topic is not None and rf.output_topic is not None:
            self.check_topic(topic, rf.output_topic.span)
        name = self.text(rf.name, "name", required=False)
        description = self.text(rf.description, "description", required=False)
        enabled = True
        if rf.enabled is not None:
            if isinstance(rf.enabled.value, bool):
                enabled = rf.enabled.value
            else:
                self.err("Y002", "enabled must be true or false", rf.enabled.span, "write `enabled: true`")
        logic = self.logic(rf.condition_logic, "conditionLogic") or "AND"
        if rf.conditions_span is not None and not rf.conditions:
            self.err(
                "V017",
                "filter has no conditions",
                rf.conditions_span,
                "add at least one condition; a filter never routes everything by accident",
            )
        cond = self.combine(rf.conditions, logic, rf.conditions_span or rf.span)
        if fid is None or consumer is None or topic is None or cond is None:
            return None
        return Filter(rf.span, fid, name, description, consumer, topic, enabled, cond)

    def check_topic(self, topic: str, span: Span) -> None:
        if not TOPIC_RE.match(topic) or topic in (".", ".."):
            bad = sorted({c for c in topic if not re.match(r"[A-Za-z0-9._-]", c)})
            why = f"contains {', '.join(repr(c) for c in bad)}" if bad else "is empty, '.', '..' or too long"
            self.err(
                "V013",
                f"illegal Kafka topic name '{topic}': it {why}",
                span,
                "use 1-249 characters of letters, digits, '.', '_' and '-', e.g. filtered-loan-events",
            )
        elif topic == RAW_TOPIC:
            self.err(
                "V013",
                f"outputTopic '{topic}' is the raw input topic; routing into it would loop",
                span,
                "write to a consumer topic such as filtered-loan-events",
            )

    def logic(self, s: RawScalar | None, what: str) -> str | None:
        if s is None:
            return None
        if isinstance(s.value, str) and s.value.upper() in ("AND", "OR"):
            return s.value.upper()
        self.err("V015", f"{what} must be AND or OR, not {s.value!r}", s.span, f"write `{what}: AND`")
        return None

    # ---- boolean structure --------------------------------------------------------------------

    def combine(self, items: tuple[RawItem, ...], default: str, span: Span) -> Node | None:
        """Join items left to right with AND binding tighter than OR."""
        runs: list[list[Node]] = [[]]
        ok = True
        for i, item in enumerate(items):
            node = self.item(item)
            op = self.logic(item.logical_operator, "logicalOperator") or default
            if node is None:
                ok = False
                continue
            if i > 0 and op == "OR":
                runs.append([])
            runs[-1].append(node)
        if not ok or not items:
            return None
        terms = [r[0] if len(r) == 1 else And(r[0].span, tuple(r)) for r in runs if r]
        return terms[0] if len(terms) == 1 else Or(terms[0].span, tuple(terms))

    def item(self, item: RawItem) -> Node | None:
        if isinstance(item, RawGroup):
            return self.group(item)
        return self.condition(item)

    def group(self, g: RawGroup) -> Node | None:
        if not g.items:
            self.err(
                "V017",
                f"'{g.kind}:' group is empty",
                g.span,
                "add conditions to the group or remove it",
            )
            return None
        if g.kind == "anyEntity":
            if self.in_entity:
                self.err("V016", "anyEntity groups cannot be nested", g.span, "merge them into one group")
                return None
            self.in_entity = True
            try:
                inner = self.combine(g.items, "AND", g.span)
            finally:
                self.in_entity = False
            return AnyEntity(g.span, inner, self.max_entities) if inner is not None else None
        inner = self.combine(g.items, "OR" if g.kind == "any" else "AND", g.span)
        if inner is None:
            return None
        return Not(g.span, inner) if g.kind == "not" else inner

    # ---- conditions ---------------------------------------------------------------------------

    def condition(self, c: RawCondition) -> Node | None:
        if c.field is None or c.operator is None:
            return None  # Y003 already reported by the loader
        path = c.field.value
        op = c.operator.value
        rp = None
        if not isinstance(path, str):
            self.err("Y002", "field must be a string path", c.field.span, "e.g. eventHeader.eventName")
        else:
            try:
                rp = resolve_path(path)
            except PathError as exc:
                self.err("V001", exc.message, c.field.span, exc.hint)
        if op not in OPERATORS:
            guess = closest(str(op), OPERATORS)
            self.err(
                "V002",
                f"unknown operator '{op}'",
                c.operator.span,
                f"did you mean '{guess}'?" if guess else f"operators: {', '.join(OPERATORS)}",
            )
            return None
        if rp is None or not isinstance(path, str):
            return None
        root_steps = rp.steps[rp.star :] if rp.star is not None else rp.steps
        ref = FieldRef(
            c.field.span,
            "entity" if rp.star is not None else "event",
            tuple(root_steps),
            rp.type,
            rp.nullable,
            path,
        )
        node = self.predicate(c, str(op), ref)
        if node is None:
            return None
        if rp.star is not None and not self.in_entity:
            return AnyEntity(c.field.span, node, self.max_entities)
        return node

    def value_type(self, c: RawCondition, field_type: str, op: str) -> str | None:
        if c.value_type is not None:
            vt = c.value_type.value
            if vt not in VALUE_TYPES:
                guess = closest(str(vt), VALUE_TYPES)
                self.err(
                    "V003",
                    f"unknown valueType '{vt}'",
                    c.value_type.span,
                    f"did you mean '{guess}'?" if guess else f"valueTypes: {', '.join(VALUE_TYPES)}",
                )
                return None
            return str(vt)
        if field_type == "long":
            return "number"
        samples = [s.value for s in (c.value, c.min, c.max) if s is not None]
        samples += [s.value for s in c.values.items] if c.values else []
        if op != "matches" and samples:
            if all(isinstance(v, bool) for v in samples):
                return "boolean"
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in samples):
                return "number"
            if all(isinstance(v, (dt.datetime, dt.date)) for v in samples):
                return "timestamp"
        return "string"

    def predicate(self, c: RawCondition, op: str, ref: FieldRef) -> Node | None:
        assert c.operator is not None
        span = c.operator.span
        vt = self.value_type(c, ref.type, op)
        if vt is None:
            return None
        vt_span = c.value_type.span if c.value_type else span
        if ref.type == "long" and vt in ("string", "boolean"):
            self.err(
                "V004",
                f"valueType {vt} does not fit '{ref.path}', which holds a number (epoch ms or count)",
                vt_span,
                "use valueType: number or timestamp",
            )
            return None
        if op == "matches" and vt != "string":
            self.err(
                "V004", f"matches needs valueType string, not {vt}", vt_span, "drop valueType or set string"
            )
            return None
        if op in _ORDERING and vt == "boolean":
            self.err(
                "V004",
                f"{op} cannot compare booleans",
                span,
                "use equals, in or notIn with true/false",
            )
            return None
        # value keys: required ones present, others absent
        want = _VALUE_KEYS[op]
        given = {
            k: v
            for k, v in (("value", c.value), ("values", c.values), ("min", c.min), ("max", c.max))
            if v is not None
        }
        ok = True
        for k in want:
            if k not in given:
                self.err(
                    "V005",
                    f"{op} needs '{k}'",
                    c.span,
                    f"add `{k}:`" + (" with a list, e.g. values: [a, b]" if k == "values" else ""),
                )
                ok = False
        for k, v in given.items():
            if k not in want:
                uses = " and ".join(f"'{w}'" for w in want) or "no value"
                self.err("V006", f"{op} uses {uses}, not '{k}'", v.span, f"remove `{k}:`")
                ok = False
        if not ok:
            return None
        operand: Node = ref
        if vt in ("number", "timestamp"):
            # Every number test runs in DECIMAL(38, 10), long fields included: Flink casts IN-list
            # literals to the operand's type, so `bigintCol IN (1.5)` would compare with 1. A text
            # field read as a timestamp also takes the ISO-8601 text capture writes.
            to = "timestamp" if vt == "timestamp" and ref.type != "long" else "decimal"
            operand = TryCast(ref.span, ref, to)

        if op in ("isNull", "isNotNull"):
            return IsNull(span, ref, op == "isNotNull")
        if op == "matches":
            assert c.value is not None
            if not isinstance(c.value.value, str):
                self.err("V007", "a matches pattern must be a string", c.value.span, "quote the pattern")
                return None
            try:
                rx = check_regex(c.value.value)
            except RegexError as exc:
                self.err(
                    "V010",
                    f"regex {c.value.value!r} at character {exc.offset + 1}: {exc.message}",
                    c.value.span,
                    exc.hint or "see 'Regex dialect' in docs/filter-language.md",
                )
                return None
            return RegexMatch(span, operand, rx.pattern, rx.java, rx.python)
        if op in ("in", "notIn"):
            assert c.values is not None
            if not c.values.items:
                self.err(
                    "V008",
                    f"{op} has an empty values list",
                    c.values.span,
                    "list at least one value" + (" (an empty in-list never matches)" if op == "in" else ""),
                )
                return None
            lits = [self.literal(v, vt) for v in c.values.items]
            if any(x is None for x in lits):
                return None
            uniq = tuple(dict.fromkeys(lits))  # type: ignore[arg-type]
            return InList(span, operand, uniq, op == "notIn")  # type: ignore[arg-type]
        if op == "between":
            assert c.min is not None and c.max is not None
            lo, hi = self.literal(c.min, vt), self.literal(c.max, vt)
            if lo is None or hi is None:
                return None
            if lo.value > hi.value:  # type: ignore[operator]
                self.err(
                    "V009",
                    f"between min {c.min.value!r} is greater than max {c.max.value!r}",
                    c.min.span,
                    "swap min and max",
                )
                return None
            return Between(span, operand, lo, hi)
        assert c.value is not None
        lit = self.literal(c.value, vt)
        if lit is None:
            return None
        return Compare(span, _COMPARE_OPS[op], operand, lit)

    def literal(self, s: RawScalar, vt: str) -> Literal | None:
        v = s.value
        if vt == "string":
            if not isinstance(v, str):
                self.err(
                    "V007",
                    f"value {v!r} is not a string but valueType is string",
                    s.span,
                    f'quote it: "{v}"' if v is not None else "write a value",
                )
                return None
            return Literal(s.span, v, "string")
        if vt == "boolean":
            if isinstance(v, bool):
                return Literal(s.span, "true" if v else "false", "string")
            if isinstance(v, str) and v in ("true", "false"):
                return Literal(s.span, v, "string")
            self.err("V007", f"value {v!r} is not true or false", s.span, "write true or false")
            return None
        if vt == "timestamp":
            return self.timestamp(s)
        return self.number(s)

    def number(self, s: RawScalar) -> Literal | None:
        v = s.value
        text: str | None = None
        if isinstance(v, bool) or v is None:
            text = None
        elif isinstance(v, int):
            text = str(int(v))
        elif isinstance(v, float):
            text = s.text.replace("_", "") if s.text else repr(float(v))
        elif isinstance(v, str):
            text = v.strip()
        if text is None or not NUMBER_RE.match(text):
            self.err("V007", f"value {v!r} is not a number", s.span, "write a number such as 100000 or 99.5")
            return None
        try:
            d = Decimal(text)
        except InvalidOperation:  # pragma: no cover - NUMBER_RE guards
            self.err("V007", f"value {v!r} is not a number", s.span)
            return None
        return self.decimal_literal(d, s)

    def decimal_literal(self, d: Decimal, s: RawScalar) -> Literal | None:
        exp = d.normalize().as_tuple().exponent
        assert isinstance(exp, int)
        if -exp > DECIMAL_SCALE or abs(d) >= _DEC_LIMIT:
            self.err(
                "V007",
                f"number {s.value!r} does not fit DECIMAL({DECIMAL_PRECISION}, {DECIMAL_SCALE}) "
                f"(at most {DECIMAL_PRECISION - DECIMAL_SCALE} integer and {DECIMAL_SCALE} fraction digits)",
                s.span,
                "round the value",
            )
            return None
        d = d.normalize()
        if d == 0:
            d = Decimal(0)
        if d.as_tuple().exponent > 0:  # type: ignore[operator]
            d = d.quantize(Decimal(1))
        return Literal(s.span, d, "decimal")

    def timestamp(self, s: RawScalar) -> Literal | None:
        """Epoch ms (a whole number) or the ISO-8601 text a field may hold, read the same way
        (``sqlsem.parse_iso_timestamp_ms``), so a literal copied from a captured event works."""
        v = s.value
        ms: Decimal | None = None
        if isinstance(v, int) and not isinstance(v, bool):
            ms = Decimal(v)
        elif isinstance(v, dt.datetime):
            if v.tzinfo is None:  # ruamel yields naive UTC datetimes for YAML timestamps
                v = v.replace(tzinfo=dt.UTC)
            ms = Decimal((v - _EPOCH) // dt.timedelta(microseconds=1)).scaleb(-3)
        elif isinstance(v, str):
            text = v.strip()
            ms = Decimal(text) if re.fullmatch(r"[+-]?\d+", text) else parse_iso_timestamp_ms(text)
        if ms is None:
            self.err(
                "V007",
                f"timestamp {v!r} is neither epoch milliseconds nor ISO-8601 with a UTC offset "
                "(YYYY-MM-DDTHH:MM:SS[.fraction] then Z or +HH:MM)",
                s.span,
                'write e.g. "2024-01-31T12:00:00Z", "2024-01-31T12:00:00.5+05:30" or 1706702400000',
            )
            return None
        return self.decimal_literal(ms, s)


def resolve(raw: RawFilterSet, text: str, diags: Collector) -> FilterSet:
    """Check ``raw`` and build the IR; problems go to ``diags`` (the IR is partial if any)."""
    return _Resolver(diags).filterset(raw, text)
