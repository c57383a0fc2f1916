"""The embedded back end: IR -> Python source, ``compile()``d once, evaluated per event.

Values follow SQL three-valued logic exactly as Flink evaluates the SQL that
``cdcrouter.backends.flink_sql`` generates from the same IR: ``None`` is UNKNOWN/NULL; a
comparison with NULL is UNKNOWN; NOT UNKNOWN is UNKNOWN; AND is FALSE if any side is FALSE, OR is
TRUE if any side is TRUE; a filter matches only when its condition is TRUE. An out-of-range index
or a missing map key reads NULL; ``TRY_CAST`` failures read NULL (:mod:`sqlsem`); ``entities[*]``
is TRUE when the predicate is TRUE for one of the first ``limit`` entities, else FALSE.

DECIMAL(38, 10) values are Python ints scaled by 10^10 (exact: a DECIMAL(38, 10) has at most 10
fraction digits): ``TRY_CAST`` is the native :func:`sqlsem.to_scaled`, a BIGINT cast multiplies,
and literals compared with a cast are scaled when the code is generated. Int comparisons cost a
fraction of ``Decimal`` ones, and the cast a fraction of ``Decimal(text).quantize``.

No tree is walked per event: each filter set becomes one generated module whose ``match`` tests
every enabled filter inline. ``CompiledFilterSet.source`` shows the code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from cdcrouter.backends import sqlsem
from cdcrouter.backends.index import MIN_GROUP, Dispatch, plan_index
from cdcrouter.errors import CdcrouterError
from cdcrouter.ir.nodes import (
    DECIMAL_SCALE,
    EXPRESSION_CLASSES,
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
from cdcrouter.ir.passes import drop_disabled, flatten_logic

PASSES = (drop_disabled, flatten_logic)
_ROOT_VARS = {"eventHeader": "h", "eventBody": "b", "sourceMetadata": "sm"}
_NULLABLE_LEAVES = {
    ("eventHeader", "eventType"),
    ("sourceMetadata", "table"),
    ("sourceMetadata", "operation"),
}
_NULLABLE_LEAVES |= {("sourceMetadata", "timestamp")}
_SCALE = 10**DECIMAL_SCALE
_PY_OPS = {"=": "==", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}

Event = dict[str, Any]
Predicate = Callable[[Event], "bool | None"]


class EvalCompileError(CdcrouterError):
    """The IR holds something the embedded engine cannot express (a compiler bug)."""


class PyCodegen:
    """Generates Python expressions for IR nodes; constants are collected into ``self.env``."""

    def __init__(self) -> None:
        self.env: dict[str, Any] = {
            "_dec": sqlsem.to_scaled,
            "_ts": sqlsem.to_scaled_timestamp,
            "_u16": sqlsem.utf16_key,
            "_EMPTY": {},
        }
        self.helpers: list[str] = []
        self._n = 0
        self._consts: dict[tuple[str, Any], str] = {}
        self.entity_var: str | None = None
        self._anys: dict[Node, str] = {}
        self._dispatch = {cls: getattr(self, f"{cls.key}_py") for cls in EXPRESSION_CLASSES}
        # match() only: event-field reads bound once to locals at its top (None: inline reads)
        self.hoisted: dict[str, str] | None = None

    def local(self, expr: str) -> str:
        """A local of ``match`` holding ``expr`` (an event-field read), shared by every filter."""
        assert self.hoisted is not None
        name = self.hoisted.get(expr)
        if name is None:
            name = self.hoisted[expr] = f"_v{len(self.hoisted)}"
        return name

    def hoist_lines(self) -> str:
        return "".join(f"    {name} = {expr}\n" for expr, name in (self.hoisted or {}).items())

    def tmp(self) -> str:
        self._n += 1
        return f"_t{self._n}"

    def const(self, value: Any, kind: str = "v") -> str:
        key = (kind, value if not isinstance(value, frozenset) else tuple(sorted(map(repr, value))))
        name = self._consts.get(key)
        if name is None:
            name = f"_K{len(self._consts)}"
            self._consts[key] = name
            self.env[name] = value
        return name

    def py(self, node: Node) -> str:
        handler = self._dispatch.get(type(node))
        if handler is None:
            raise EvalCompileError(f"{node.span} B003 no Python handler for {type(node).__name__}")
        return handler(node)

    # -- values: may be None --------------------------------------------------------------------

    def field_ref_py(self, n: FieldRef) -> str:
        steps = list(n.steps)
        if n.root == "entity":
            if self.entity_var is None:
                raise EvalCompileError(f"{n.span} B004 entity field outside entities[*]")
            expr = self.entity_var
        else:
            first = steps.pop(0)
            assert isinstance(first, Attr)
            expr = _ROOT_VARS[first.name]
            if first.name == "eventBody" and steps and steps[0] == Attr("entities"):
                steps.pop(0)
                expr = "ents"
        guards: list[str] = []
        names = [s.name for s in n.steps if isinstance(s, Attr)]
        base = expr
        for i, step in enumerate(steps):
            base = expr
            if isinstance(step, Attr):
                last = i == len(steps) - 1
                nullable_leaf = last and tuple(names[-2:]) in _NULLABLE_LEAVES
                expr = f"{expr}.get({step.name!r})" if nullable_leaf else f"{expr}[{step.name!r}]"
            elif isinstance(step, Index):
                guards.append(f"len({expr}) > {step.index}")
                expr = f"{expr}[{step.index}]"
            elif isinstance(step, Key):
                expr = f"{expr}.get({step.key!r})"
        guard = " and ".join(guards)
        if self.hoisted is not None and self.entity_var is None:
            # Every read is safe to do eagerly (indexes are guarded, nullable fields use .get), so
            # match() reads each field once; a map read through an index shares its map, or {}.
            last_step = steps[-1] if steps else None
            if isinstance(last_step, Key) and guards:
                return f"{self.local(f'({base} if {guard} else _EMPTY)')}.get({last_step.key!r})"
            return self.local(f"({expr} if {guard} else None)" if guards else expr)
        if guards:
            return f"({expr} if {guard} else None)"
        return expr

    def literal_py(self, n: Literal) -> str:
        if isinstance(n.value, Decimal):
            return self.const(n.value)
        return repr(n.value)

    def try_cast_py(self, n: TryCast) -> str:
        """A DECIMAL(38, 10) value scaled by 10^10 (an int), or None."""
        if n.to not in ("decimal", "timestamp"):
            raise EvalCompileError(f"{n.span} B003 cast to {n.to}")
        val = self.py(n.operand)
        cast = "_dec" if n.to == "decimal" else "_ts"
        if isinstance(n.operand, FieldRef) and n.operand.type == "long":
            # Every BIGINT fits DECIMAL(38, 10): the cast cannot fail, scaling is all it does
            # (and leaves see through it when their literals are whole, see _operand_of).
            if self._never_null(n.operand):
                return f"({val} * {_SCALE})"
            t = self.tmp()
            return f"(None if ({t} := {val}) is None else {t} * {_SCALE})"
        if self.hoisted is not None:  # match(): skip the call for the common missing attribute
            t = self.tmp()
            return f"(None if ({t} := {val}) is None else {cast}({t}))"
        return f"{cast}({val})"

    # -- predicates: True / False / None ----------------------------------------------------------

    def _never_null(self, n: Node) -> bool:
        return (
            isinstance(n, FieldRef)
            and not n.nullable
            and n.root == "event"
            and not any(isinstance(s, (Index, Key)) for s in n.steps)
        ) or (isinstance(n, FieldRef) and n.root == "entity" and not any(isinstance(s, Key) for s in n.steps))

    def _guarded(self, operand: Node, body: Callable[[str], str]) -> str:
        """``None if v is None else body(v)`` with ``v`` bound once."""
        val = self.py(operand)
        if self._never_null(operand):
            return f"({body(val)})"
        t = self.tmp()
        return f"(None if ({t} := {val}) is None else {body(t)})"

    @staticmethod
    def _value(lit: Literal, operand: Node) -> Any:
        """The literal as compared with ``operand`` (from :meth:`_operand_of`): scaled by 10^10
        against a DECIMAL cast; a whole Decimal is an int (same order and hash, cheaper)."""
        if isinstance(operand, TryCast):
            if isinstance(lit.value, str):
                raise EvalCompileError(f"{lit.span} B003 text literal compared with a number")
            return sqlsem.scale_decimal(lit.value)
        if isinstance(lit.value, Decimal) and lit.value == int(lit.value):
            return int(lit.value)
        return lit.value

    def _lit(self, lit: Literal, operand: Node) -> str:
        """A literal's code: numbers become int constants in the source (no global lookup)."""
        value = self._value(lit, operand)
        return repr(value) if isinstance(value, int) else self.py(lit)

    def _order_operand(self, lit: Literal, v: str, op: str, operand: Node) -> tuple[str, str]:
        """Operands for an ordering test; strings use UTF-16 order unless the literal is ASCII."""
        if lit.type == "string" and op not in ("=", "<>") and not str(lit.value).isascii():
            return f"_u16({v})", self.const(sqlsem.utf16_key(str(lit.value)))
        return v, self._lit(lit, operand)

    def compare_py(self, n: Compare) -> str:
        return self._guarded(self._operand_of(n), self._leaf_body(n))

    def in_list_py(self, n: InList) -> str:
        return self._guarded(self._operand_of(n), self._leaf_body(n))

    def between_py(self, n: Between) -> str:
        return self._guarded(self._operand_of(n), self._between_body(n))

    def _between_body(self, n: Between) -> Callable[[str], str]:
        operand = self._operand_of(n)

        def body(v: str) -> str:
            left, lo = self._order_operand(n.low, v, "<=", operand)
            left2, hi = self._order_operand(n.high, v, "<=", operand)
            if left != left2:  # mixed ASCII / non-ASCII bounds: order both in UTF-16
                left = f"_u16({v})"
                lo = self.const(sqlsem.utf16_key(str(n.low.value)))
                hi = self.const(sqlsem.utf16_key(str(n.high.value)))
            return f"{lo} <= {left} <= {hi}"

        return body

    def regex_match_py(self, n: RegexMatch) -> str:
        return self._guarded(n.operand, self._leaf_body(n))

    def is_null_py(self, n: IsNull) -> str:
        return f"({self.py(n.operand)} is {'not ' if n.negated else ''}None)"

    def and_py(self, n: And) -> str:
        ts = [self.tmp() for _ in n.operands]
        chain = " else ".join(
            f"False if ({t} := {self.py(o)}) is False" for t, o in zip(ts, n.operands, strict=True)
        )
        unknown = " or ".join(f"{t} is None" for t in ts)
        return f"({chain} else None if {unknown} else True)"

    def or_py(self, n: Or) -> str:
        ts = [self.tmp() for _ in n.operands]
        chain = " else ".join(
            f"True if ({t} := {self.py(o)}) is True" for t, o in zip(ts, n.operands, strict=True)
        )
        unknown = " or ".join(f"{t} is None" for t in ts)
        return f"({chain} else None if {unknown} else False)"

    def not_py(self, n: Not) -> str:
        t = self.tmp()
        return f"(None if ({t} := {self.py(n.operand)}) is None else not {t})"

    def any_entity_py(self, n: AnyEntity) -> str:
        if self.entity_var is not None:
            raise EvalCompileError(f"{n.span} B004 nested entities[*]")
        if n in self._anys:
            return self._anys[n]
        name = f"_q{len(self.helpers)}"
        self._anys[n] = f"{name}(h, b, ents, sm)"
        self.entity_var = "e"
        self.helpers.append("")  # reserve the name before compiling nested parts
        try:
            pred = self.truth(n.predicate, True)
        finally:
            self.entity_var = None
        self.helpers[int(name[2:])] = (
            f"def {name}(h, b, ents, sm):\n"
            f"    for e in (ents if len(ents) <= {n.limit} else ents[:{n.limit}]):\n"
            f"        if {pred}:\n"
            f"            return True\n"
            f"    return False\n"
        )
        return f"{name}(h, b, ents, sm)"

    # -- two-valued "is TRUE" / "is FALSE" forms for the hot path -----------------------------

    def truth(self, n: Node, want: bool) -> str:
        """A plain-bool Python expression for ``n IS TRUE`` (want=True) or ``n IS FALSE``.

        Exactly the three-valued result projected on one truth value (UNKNOWN is neither), so
        ``match`` needs no tri-state temporaries: NOT swaps the two, AND/OR swap by De Morgan.
        """
        if isinstance(n, And):
            word = " and " if want else " or "
            return "(" + word.join(self.truth(o, want) for o in n.operands) + ")"
        if isinstance(n, Or):
            word = " or " if want else " and "
            return "(" + word.join(self.truth(o, want) for o in n.operands) + ")"
        if isinstance(n, Not):
            return self.truth(n.operand, not want)
        if isinstance(n, IsNull):
            is_null = not n.negated
            return f"({self.py(n.operand)} is {'' if is_null == want else 'not '}None)"
        if isinstance(n, AnyEntity):
            call = self.any_entity_py(n)
            return call if want else f"(not {call})"
        if isinstance(n, (Compare, InList, Between, RegexMatch)):
            body = self._leaf_body(n)
            val = self.py(self._operand_of(n))
            if self._never_null(self._operand_of(n)):
                test = body(val)
                return f"({test})" if want else f"(not ({test}))"
            t = self.tmp()
            test = body(t)
            return f"(({t} := {val}) is not None and {'' if want else 'not '}({test}))"
        raise EvalCompileError(f"{n.span} B003 no truth form for {type(n).__name__}")

    @staticmethod
    def _operand_of(n: Node) -> Node:
        """The value a leaf tests. A BIGINT field cast to DECIMAL and compared only with whole
        numbers is tested as the plain int (exact, and no scaling per event)."""
        operand: Node = n.left if isinstance(n, Compare) else n.operand  # type: ignore[attr-defined]
        if isinstance(operand, TryCast) and isinstance(operand.operand, FieldRef):
            lits = [x for x in n.children() if isinstance(x, Literal)]
            if operand.operand.type == "long" and all(
                not isinstance(x.value, str) and x.value == int(x.value) for x in lits
            ):
                return operand.operand
        return operand

    def _leaf_body(self, n: Node) -> Callable[[str], str]:
        """The test of a predicate leaf on a non-null value variable."""
        operand = self._operand_of(n)
        if isinstance(n, Compare):
            assert isinstance(n.right, Literal)
            right = n.right

            def cmp(v: str) -> str:
                left, lit = self._order_operand(right, v, n.op, operand)
                return f"{left} {_PY_OPS[n.op]} {lit}"

            return cmp
        if isinstance(n, InList):
            name = self.const(frozenset(self._value(v, operand) for v in n.values), "set")
            return lambda v: f"{v} {'not in' if n.negated else 'in'} {name}"
        if isinstance(n, Between):
            return self._between_body(n)
        if isinstance(n, RegexMatch):
            search = self.const(re.compile(n.python, re.ASCII).search, "rx:" + n.python)
            return lambda v: f"{search}({v}) is not None"
        raise EvalCompileError(f"{n.span} B003 not a leaf: {type(n).__name__}")


_PREAMBLE = (
    '    h = ev["eventHeader"]; b = ev["eventBody"]; ents = b["entities"]; sm = ev["sourceMetadata"]\n'
)


@dataclass(frozen=True)
class CompiledFilterSet:
    """Compiled enabled filters. ``match(event)`` -> ids of matching filters, in file order.

    ``predicates[id](event)`` gives one filter's three-valued result (True/False/None).
    """

    filters: tuple[Filter, ...]
    match: Callable[[Event], list[str]]
    predicates: dict[str, Predicate]
    source: str

    def topics(self, event: Event) -> list[str]:
        """Output topics the event goes to (one per matching filter)."""
        by_id = {f.id: f.output_topic for f in self.filters}
        return [by_id[i] for i in self.match(event)]


def python_source(filterset: FilterSet, index: bool = True) -> tuple[str, dict[str, Any]]:
    """The generated module source and its constants for ``filterset``'s enabled filters.

    ``match`` looks each indexed field up in its dispatch dict (:mod:`cdcrouter.backends.index`)
    and calls the bucket function found there, which tests only that value's candidates; the
    filters no field indexes are tested inline. The ``_p`` functions test one filter each.
    ``index=False`` tests every filter inline, as before the index (``bench match --no-index``).
    """
    fs = flatten_logic(drop_disabled(filterset))
    assert isinstance(fs, FilterSet)
    gen = PyCodegen()
    exprs = [gen.py(f.condition) for f in fs.filters]
    plan = plan_index(fs.filters, MIN_GROUP if index else len(fs.filters) + 1)
    lines = [f"# generated by cdcrouter from {fs.file!r} (sha256 {fs.source_hash[:16]})\n"]
    gen.hoisted = {}  # match()'s locals, passed on to the bucket functions that read them
    keys = [gen.py(d.field) for d in plan.dispatches]
    dispatches = [_dispatch_source(gen, d, n, fs.filters) for n, d in enumerate(plan.dispatches)]
    truths = [(fs.filters[i], gen.truth(fs.filters[i].condition, True)) for i in plan.rest]
    lines.extend(h + "\n" for h in gen.helpers)
    for i, (f, e) in enumerate(zip(fs.filters, exprs, strict=True)):
        lines.append(f"def _p{i}(ev):  # {f.id}\n{_PREAMBLE}    return {e}\n\n")
    lines.extend(src for src, _ in dispatches)
    body = [
        f"    _f = _D{n}.get({key})\n    if _f is not None:\n        _f({args}out)\n"
        for n, (key, (_, args)) in enumerate(zip(keys, dispatches, strict=True))
    ]
    if len(plan.dispatches) == 1 and plan.rest:
        body.append("    _n = len(out)\n")
    body += [f"    if {t}:\n        out.append({f.id!r})\n" for f, t in truths]
    if len(plan.dispatches) + bool(plan.rest) > 1:  # matches from several places: file order
        gen.env["_POS"] = {f.id: i for i, f in enumerate(fs.filters)}
        several = "len(out) > 1" if len(plan.dispatches) > 1 else "_n and len(out) > _n"
        body.append(f"    if {several}:\n        out.sort(key=_POS.__getitem__)\n")
    head = "def match(ev):\n" + _PREAMBLE + gen.hoist_lines()
    lines.append(head + "    out = []\n" + "".join(body) + "    return out\n")
    return "".join(lines), gen.env


_NAMES = re.compile(r"\b(_v\d+|h|b|ents|sm)\b")


def _dispatch_source(gen: PyCodegen, d: Dispatch, n: int, filters: tuple[Filter, ...]) -> tuple[str, str]:
    """Bucket functions ``_b<n>_<k>(<match locals they read>, out)``, the dict ``_D<n>`` value ->
    bucket, and the arguments ``match`` passes (its hoisted reads, so no bucket reads them again).

    Values whose candidates and residuals are the same share one function (an ``in`` list).
    """
    names: dict[tuple[tuple[int, Node | bool], ...], str] = {}
    bodies: list[tuple[str, str]] = []
    for entries in d.buckets.values():
        if entries in names:
            continue
        name = names[entries] = f"_b{n}_{len(names)}"
        tests = []
        for i, residual in entries:
            append = f"out.append({filters[i].id!r})"
            if residual is True:
                tests.append(f"    {append}\n")
            else:
                assert not isinstance(residual, bool)
                tests.append(f"    if {gen.truth(residual, True)}:\n        {append}\n")
        bodies.append((name, "".join(tests)))
    used = {m for _, text in bodies for m in _NAMES.findall(text)}
    args = "".join(f"{v}, " for v in sorted(used, key=lambda v: (v.startswith("_v"), len(v), v)))
    out = [f"def {name}({args}out):\n{text}\n" for name, text in bodies]
    items = ", ".join(f"{v!r}: {names[entries]}" for v, entries in d.buckets.items())
    out.append(f"_D{n} = {{{items}}}  # {d.field.path!r}\n\n")
    return "".join(out), args


def compile_filterset(filterset: FilterSet, index: bool = True) -> CompiledFilterSet:
    """Compile the enabled filters of ``filterset`` into a fast matcher.

    Events are fastavro-decoded raw events (``eventHeader``, ``eventBody.entities[...]``,
    ``sourceMetadata``), every schema field present.
    """
    source, env = python_source(filterset, index)
    enabled = filterset.enabled()
    namespace: dict[str, Any] = dict(env)
    exec(compile(source, f"<cdcrouter filters {filterset.file}>", "exec"), namespace)
    preds = {f.id: namespace[f"_p{i}"] for i, f in enumerate(enabled)}
    return CompiledFilterSet(enabled, namespace["match"], preds, source)
