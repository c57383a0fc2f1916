"""Why did (or didn't) an event match? Per filter and per condition: value seen and truth.

Each condition (an IR predicate leaf) is compiled on its own with the embedded engine's code
generator, so what ``explain`` shows is exactly what the router computes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from cdcrouter.backends.python_eval import _PREAMBLE, PyCodegen, compile_filterset
from cdcrouter.filters.span import Span
from cdcrouter.ir.nodes import (
    PREDICATE_LEAVES,
    AnyEntity,
    Between,
    Compare,
    FieldRef,
    FilterSet,
    InList,
    IsNull,
    Literal,
    Node,
    RegexMatch,
)
from cdcrouter.ir.passes import flatten_logic

TRUTH = {True: "TRUE", False: "FALSE", None: "NULL"}


def describe(n: Node) -> str:
    """A leaf condition as text, e.g. ``eventHeader.eventName = 'LoanCreated'``."""
    field = next((x.path for x in n.walk() if isinstance(x, FieldRef)), "?")

    def lit(x: Literal) -> str:
        return str(x.value) if isinstance(x.value, (Decimal, int)) else repr(x.value)

    if isinstance(n, Compare):
        assert isinstance(n.right, Literal)
        return f"{field} {n.op} {lit(n.right)}"
    if isinstance(n, InList):
        return f"{field} {'not in' if n.negated else 'in'} [{', '.join(lit(v) for v in n.values)}]"
    if isinstance(n, Between):
        return f"{field} between {lit(n.low)} and {lit(n.high)}"
    if isinstance(n, RegexMatch):
        return f"{field} matches /{n.pattern}/"
    if isinstance(n, IsNull):
        return f"{field} is {'not ' if n.negated else ''}null"
    return type(n).__name__


@dataclass(frozen=True)
class _Leaf:
    node: Node
    text: str
    limit: int | None  # set for a condition inside entities[*]
    span: Span
    fn: Callable[..., Any]


def _leaves(node: Node, limit: int | None = None) -> list[tuple[Node, int | None]]:
    if isinstance(node, PREDICATE_LEAVES):
        return [(node, limit)]
    if isinstance(node, AnyEntity):
        return _leaves(node.predicate, node.limit)
    out: list[tuple[Node, int | None]] = []
    for c in node.children():
        out.extend(_leaves(c, limit))
    return out


class Explainer:
    """Compiled once per filter set; :meth:`explain` per event."""

    def __init__(self, filterset: FilterSet) -> None:
        self.filterset = filterset
        self.compiled = compile_filterset(filterset)
        self.leaves: dict[str, list[_Leaf]] = {}
        for f in filterset.filters:
            items = []
            for node, limit in _leaves(flatten_logic(f.condition)):
                ref = next(x for x in node.walk() if isinstance(x, FieldRef))
                items.append(_Leaf(node, describe(node), limit, ref.span, self._compile_leaf(node, limit)))
            self.leaves[f.id] = items

    @staticmethod
    def _compile_leaf(node: Node, limit: int | None) -> Callable[..., Any]:
        gen = PyCodegen()
        ref = next(x for x in node.walk() if isinstance(x, FieldRef))
        if limit is not None:
            gen.entity_var = "e"
        value, truth = gen.py(ref), gen.py(node)
        if limit is not None:
            src = (
                "def _leaf(ev):\n" + _PREAMBLE + f"    return [({value}, {truth}) for e in ents[:{limit}]]\n"
            )
        else:
            src = "def _leaf(ev):\n" + _PREAMBLE + f"    return ({value}, {truth})\n"
        ns: dict[str, Any] = dict(gen.env)
        exec(compile(src, "<cdcrouter explain>", "exec"), ns)
        return ns["_leaf"]

    def explain(self, event: dict[str, Any]) -> dict[str, Any]:
        """``{"matched": [ids], "filters": [{id, topic, enabled, result, conditions: [...]}]}``."""
        matched = self.compiled.match(event)
        filters = []
        for f in self.filterset.filters:
            result = self.compiled.predicates[f.id](event) if f.enabled else None
            conds = []
            for leaf in self.leaves[f.id]:
                if leaf.limit is not None:
                    pairs = leaf.fn(event)
                    seen: Any = [_jsonable(v) for v, _ in pairs]
                    truth = any(t is True for _, t in pairs)
                    label = "TRUE" if truth else "FALSE"
                    note = f"entities[*]: TRUE when one of the first {leaf.limit} entities matches"
                else:
                    v, t = leaf.fn(event)
                    seen, label, note = _jsonable(v), TRUTH[t], None
                conds.append(
                    {
                        "condition": leaf.text,
                        "line": leaf.span.line,
                        "column": leaf.span.column,
                        "seen": seen,
                        "truth": label,
                        **({"note": note} if note else {}),
                    }
                )
            filters.append(
                {
                    "id": f.id,
                    "outputTopic": f.output_topic,
                    "enabled": f.enabled,
                    "result": TRUTH[result] if f.enabled else "DISABLED",
                    "conditions": conds,
                }
            )
        return {"matched": matched, "filters": filters}


def _jsonable(v: Any) -> Any:
    return str(v) if isinstance(v, Decimal) else v
