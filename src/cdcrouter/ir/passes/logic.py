"""Boolean-structure passes: flatten nested AND/OR, drop disabled filters."""

from __future__ import annotations

import dataclasses

from cdcrouter.ir.nodes import And, AnyEntity, Filter, FilterSet, Node, Not, Or


def flatten_logic(node: Node) -> Node:
    """``And(a, And(b, c))`` -> ``And(a, b, c)`` (same for Or); one-operand groups disappear.

    Three-valued AND/OR are associative, so this never changes a result.
    """
    if isinstance(node, FilterSet):
        return node.replace(filters=tuple(flatten_logic(f) for f in node.filters))
    if isinstance(node, Filter):
        return node.replace(condition=flatten_logic(node.condition))
    if isinstance(node, (And, Or)):
        flat: list[Node] = []
        for op in node.operands:
            op = flatten_logic(op)
            if type(op) is type(node):
                flat.extend(op.operands)  # type: ignore[attr-defined]
            else:
                flat.append(op)
        if len(flat) == 1:
            return flat[0]
        return node.replace(operands=tuple(flat))
    if isinstance(node, Not):
        return node.replace(operand=flatten_logic(node.operand))
    if isinstance(node, AnyEntity):
        return node.replace(predicate=flatten_logic(node.predicate))
    return node


def drop_disabled(fs: FilterSet) -> FilterSet:
    """Only the filters with ``enabled: true``; back ends never see the others."""
    return dataclasses.replace(fs, filters=fs.enabled())
