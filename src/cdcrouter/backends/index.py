"""The filter index: which filters can match an event, decided from one field read per dispatch.

Most filters require a text field to equal one of a few values (``eventName in [...]``,
``entities[0].entityType = Loan``). :func:`required_values` proves such a requirement from the IR
with three-valued logic, so it is exact, not a guess: if a filter is TRUE, the field is non-NULL
and one of the returned values. The embedded engine then looks the field up in a dict and
evaluates only the filters listed under its value, each with :func:`assume`'s residual (the
condition simplified knowing the value), plus the filters no field indexes.

Only text fields read straight from the event are indexed (``string``/``boolean`` conditions, no
cast): they compare with Python ``==`` on ``str``, which is exactly dict-key equality, and a NULL
field reads ``None``, which is no key. Number tests go through ``TRY_CAST`` and stay residual.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from cdcrouter.ir.nodes import And, Compare, FieldRef, Filter, InList, IsNull, Literal, Node, Not, Or, Step

FieldKey = tuple[Step, ...]
"""An event field by its path steps (``eventHeader.eventName`` -> (Attr, Attr))."""

MIN_GROUP = 8
"""Fewest filters worth a dispatch on a field. A dispatch costs about as much per event as six or
seven failing inline ``eventName = X`` tests (a lookup, a call): with the router benchmark's 20
filters, six of them dispatched made ``match`` ~11% slower than testing all inline (2026-12-06)."""

_Needs = dict[FieldKey, frozenset[str]]


def _indexable(n: Node) -> FieldRef | None:
    """The operand of a leaf if it is a text field of the event itself (not a cast, not [*])."""
    operand = n.left if isinstance(n, Compare) else getattr(n, "operand", None)
    if isinstance(operand, FieldRef) and operand.root == "event" and operand.type == "string":
        return operand
    return None


def _merge(a: _Needs, b: _Needs) -> _Needs:
    """Both requirements hold (AND): a field in both must be in both sets."""
    out = dict(a)
    for k, v in b.items():
        out[k] = out[k] & v if k in out else v
    return out


def _either(parts: Sequence[_Needs]) -> _Needs:
    """One of the requirements holds (OR): only fields every part constrains, values united."""
    common = set(parts[0]).intersection(*parts[1:]) if parts else set()
    return {k: frozenset().union(*(p[k] for p in parts)) for k in common}


def required_values(n: Node, want: bool = True) -> _Needs:
    """Field -> values such that ``n IS <want>`` implies the field is non-NULL and in the values.

    ``want=False`` is needed under NOT (``NOT x`` is TRUE exactly when ``x`` is FALSE); AND and OR
    swap by De Morgan. Anything not understood requires nothing (an empty dict), which is sound.
    """
    if isinstance(n, And):
        parts = [required_values(o, want) for o in n.operands]
        return _fold_merge(parts) if want else _either(parts)
    if isinstance(n, Or):
        parts = [required_values(o, want) for o in n.operands]
        return _either(parts) if want else _fold_merge(parts)
    if isinstance(n, Not):
        return required_values(n.operand, not want)
    ref = _indexable(n) if isinstance(n, (Compare, InList)) else None
    if ref is None:
        return {}
    if (
        isinstance(n, Compare)
        and isinstance(n.right, Literal)
        and isinstance(n.right.value, str)
        and n.op == ("=" if want else "<>")
    ):
        return {ref.steps: frozenset([n.right.value])}
    if isinstance(n, InList) and n.negated != want:
        return {ref.steps: frozenset(str(v.value) for v in n.values)}
    return {}


def _fold_merge(parts: Sequence[_Needs]) -> _Needs:
    out: _Needs = {}
    for p in parts:
        out = _merge(out, p)
    return out


def assume(n: Node, field: FieldKey, value: str) -> Node | bool:
    """``n`` simplified for events whose ``field`` reads the non-NULL text ``value``.

    Leaves that test that field become TRUE or FALSE (never UNKNOWN: the value is not NULL), and
    AND/OR/NOT fold around them with three-valued logic, so the result is exact for such events.
    """
    if isinstance(n, (And, Or)):
        absorbing = isinstance(n, Or)  # TRUE absorbs an OR, FALSE an AND
        kept: list[Node] = []
        for o in n.operands:
            r = assume(o, field, value)
            if r is absorbing:
                return absorbing
            if not isinstance(r, bool):
                kept.append(r)
        if not kept:
            return not absorbing
        return kept[0] if len(kept) == 1 else n.replace(operands=tuple(kept))
    if isinstance(n, Not):
        r = assume(n.operand, field, value)
        return (not r) if isinstance(r, bool) else n.replace(operand=r)
    if isinstance(n, IsNull):
        if isinstance(n.operand, FieldRef) and n.operand.root == "event" and n.operand.steps == field:
            return n.negated
        return n
    ref = _indexable(n) if isinstance(n, (Compare, InList)) else None
    if ref is None or ref.steps != field:
        return n
    if isinstance(n, Compare) and isinstance(n.right, Literal) and n.op in ("=", "<>"):
        return (value == n.right.value) == (n.op == "=")
    if isinstance(n, InList):
        return (value in {v.value for v in n.values}) != n.negated
    return n


@dataclass(frozen=True)
class Dispatch:
    """Filters indexed on one field: ``buckets[value]`` = (filter position, residual) in file order."""

    field: FieldRef
    buckets: dict[str, tuple[tuple[int, Node | bool], ...]]


@dataclass(frozen=True)
class IndexPlan:
    """How ``match`` finds its candidates: dispatches first, then the ``rest`` tested inline.

    A filter in neither can never be TRUE (it requires two different values of one field).
    """

    dispatches: tuple[Dispatch, ...]
    rest: tuple[int, ...]


def plan_index(filters: Sequence[Filter], min_group: int = MIN_GROUP) -> IndexPlan:
    """Assign each filter to the required field where it is a candidate least often.

    A filter requiring k of a field's D known values is a candidate for about k/D of the events
    (D: the distinct values all filters require of that field, a stand-in for its cardinality), so
    ``eventName in [A, B]`` beats ``region = north`` when there are more names than regions. A
    field with fewer than ``min_group`` filters is dropped and its filters reassigned, so small
    filter sets compile to the plain inline test of every filter.
    """
    needs = [required_values(f.condition) for f in filters]
    refs = {ref.steps: ref for f in filters for ref in f.condition.walk() if isinstance(ref, FieldRef)}
    seen: dict[FieldKey, set[str]] = {}
    for need in needs:
        for k, values in need.items():
            seen.setdefault(k, set()).update(values)
    candidates = set(seen)
    never = {i for i, need in enumerate(needs) if not all(need.values())}  # requires a value in {}

    def share(need: _Needs, k: FieldKey) -> tuple[float, str]:
        return (len(need[k]) / len(seen[k]) if seen[k] else 0.0, refs[k].path)

    while True:
        chosen = [
            None
            if i in never
            else min((k for k in need if k in candidates), key=lambda k: share(need, k), default=None)
            for i, need in enumerate(needs)
        ]
        sizes = Counter(k for k in chosen if k is not None)
        small = {k for k in candidates if sizes[k] < min_group}
        if not small:
            break
        candidates -= small
    dispatches = []
    for k in sorted(sizes, key=lambda k: (-sizes[k], refs[k].path)):
        buckets: dict[str, list[tuple[int, Node | bool]]] = {}
        for i, f in enumerate(filters):
            if chosen[i] != k:
                continue
            for value in sorted(needs[i][k]):
                residual = assume(f.condition, k, value)
                if residual is not False:
                    buckets.setdefault(value, []).append((i, residual))
        dispatches.append(Dispatch(refs[k], {v: tuple(b) for v, b in buckets.items()}))
    rest = tuple(i for i, k in enumerate(chosen) if k is None and i not in never)
    return IndexPlan(tuple(dispatches), rest)
