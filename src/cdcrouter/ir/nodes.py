"""The filter IR: a closed set of frozen dataclasses, the single source for every back end.

Expressions evaluate to SQL three-valued booleans (TRUE, FALSE, UNKNOWN/NULL) or to values.
Every node carries the :class:`Span` of the YAML that produced it. ``walk``, ``replace`` and
``to_dict``/``from_dict`` live on the base class only; subclasses just declare fields.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar
from typing import Literal as _L

from cdcrouter.ir.span import NO_SPAN, Span

ValueType = _L["string", "decimal", "long", "boolean"]
"""SQL value types the IR knows: STRING, DECIMAL(38,10), BIGINT, BOOLEAN."""

DECIMAL_PRECISION = 38
DECIMAL_SCALE = 10
MAX_ENTITIES = 10
"""How many entities ``entities[*]`` tests (see :class:`AnyEntity`)."""


@dataclass(frozen=True, slots=True)
class Attr:
    """Record field access: ``.name``."""

    name: str


@dataclass(frozen=True, slots=True)
class Index:
    """Array element, 0-based here (back ends add 1 for SQL). Out of range reads NULL."""

    index: int


@dataclass(frozen=True, slots=True)
class Key:
    """Map lookup by key. A missing key reads NULL."""

    key: str


Step = Attr | Index | Key

_NODE_CLASSES: dict[str, type[Node]] = {}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclass(frozen=True)
class Node:
    """Base of every IR node. ``key`` (snake case class name) selects back-end handlers."""

    span: Span = dataclasses.field(compare=False, repr=False)
    key: ClassVar[str] = "node"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        cls.key = _snake(cls.__name__)
        _NODE_CLASSES[cls.key] = cls

    def children(self) -> Iterator[Node]:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Node):
                yield v
            elif isinstance(v, tuple):
                yield from (x for x in v if isinstance(x, Node))

    def walk(self) -> Iterator[Node]:
        """Pre-order traversal of this node and all its descendants."""
        yield self
        for child in self.children():
            yield from child.walk()

    def replace(self, **changes: Any) -> Node:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.key}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = [v.line, v.column] if f.name == "span" else _dump(v)
        return out

    @staticmethod
    def from_dict(data: dict[str, Any], file: str = "<ir>") -> Node:
        cls = _NODE_CLASSES[data["node"]]
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            v = data[f.name]
            kwargs[f.name] = Span(file, v[0], v[1]) if f.name == "span" else _load(v, file)
        return cls(**kwargs)


def _dump(v: Any) -> Any:
    if isinstance(v, Node):
        return v.to_dict()
    if isinstance(v, (Attr, Index, Key)):
        return {"step": type(v).__name__.lower(), "value": dataclasses.astuple(v)[0]}
    if isinstance(v, tuple):
        return [_dump(x) for x in v]
    if isinstance(v, Decimal):
        return {"decimal": str(v)}
    return v


def _load(v: Any, file: str) -> Any:
    if isinstance(v, list):
        return tuple(_load(x, file) for x in v)
    if isinstance(v, dict):
        if "node" in v:
            return Node.from_dict(v, file)
        if "step" in v:
            return {"attr": Attr, "index": Index, "key": Key}[v["step"]](v["value"])
        if "decimal" in v:
            return Decimal(v["decimal"])
    return v


# ---- expressions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRef(Node):
    """A field of the event (``root='event'``) or of the quantified entity (``root='entity'``).

    ``type`` is the SQL type of the value read ('string' or 'long'); ``nullable`` says whether it
    can be NULL (nullable Avro field, array index out of range, missing map key).
    ``path`` is the text the user wrote, for messages and ``explain``.
    """

    root: str
    steps: tuple[Step, ...]
    type: str
    nullable: bool
    path: str


@dataclass(frozen=True)
class Literal(Node):
    """A constant: str for 'string'/'boolean' text, Decimal for 'decimal', int for 'long'."""

    value: str | Decimal | int
    type: str


@dataclass(frozen=True)
class TryCast(Node):
    """``TRY_CAST(operand AS <to>)``: NULL when the text is not a valid value of the type."""

    operand: Node
    to: str


@dataclass(frozen=True)
class Compare(Node):
    """``left <op> right`` with op in = <> < <= > >=. NULL on either side gives UNKNOWN."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class InList(Node):
    """``operand [NOT] IN (values)``; values are non-null literals, so only a NULL operand is UNKNOWN."""

    operand: Node
    values: tuple[Literal, ...]
    negated: bool


@dataclass(frozen=True)
class Between(Node):
    """``operand BETWEEN low AND high`` (inclusive, low <= high checked by validation)."""

    operand: Node
    low: Literal
    high: Literal


@dataclass(frozen=True)
class RegexMatch(Node):
    """Partial regex match (Java ``Matcher.find()``), UNKNOWN on NULL.

    ``pattern`` is what the user wrote; ``java`` and ``python`` are the checked renderings that
    mean the same thing in both engines (see ``cdcrouter.filters.regex``).
    """

    operand: Node
    pattern: str
    java: str
    python: str


@dataclass(frozen=True)
class IsNull(Node):
    """``operand IS [NOT] NULL``: never UNKNOWN."""

    operand: Node
    negated: bool


@dataclass(frozen=True)
class And(Node):
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Or(Node):
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Not(Node):
    """SQL NOT: NOT UNKNOWN is UNKNOWN."""

    operand: Node


@dataclass(frozen=True)
class AnyEntity(Node):
    """TRUE when ``predicate`` is TRUE for at least one entity, otherwise FALSE (never UNKNOWN).

    Inside ``predicate``, FieldRefs with ``root='entity'`` read the entity being tested. Only the
    first ``limit`` entities are tested: Flink 2.2 cannot plan a subquery over UNNEST, so the SQL
    back end unrolls the test, and the embedded engine honours the same bound.
    """

    predicate: Node
    limit: int


# ---- filters -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filter(Node):
    """One routing rule: events for which ``condition`` is TRUE go to ``output_topic``."""

    id: str
    name: str | None
    description: str | None
    consumer_id: str
    output_topic: str
    enabled: bool
    condition: Node


@dataclass(frozen=True)
class FilterSet(Node):
    """All filters of one file, in file order. ``source_hash`` is the sha256 of the file text."""

    file: str
    source_hash: str
    filters: tuple[Filter, ...]

    def enabled(self) -> tuple[Filter, ...]:
        return tuple(f for f in self.filters if f.enabled)


EXPRESSION_CLASSES: tuple[type[Node], ...] = (
    FieldRef,
    Literal,
    TryCast,
    Compare,
    InList,
    Between,
    RegexMatch,
    IsNull,
    And,
    Or,
    Not,
    AnyEntity,
)
PREDICATE_LEAVES: tuple[type[Node], ...] = (Compare, InList, Between, RegexMatch, IsNull)

__all__ = [
    "DECIMAL_PRECISION",
    "DECIMAL_SCALE",
    "EXPRESSION_CLASSES",
    "MAX_ENTITIES",
    "NO_SPAN",
    "PREDICATE_LEAVES",
    "And",
    "AnyEntity",
    "Attr",
    "Between",
    "Compare",
    "FieldRef",
    "Filter",
    "FilterSet",
    "InList",
    "Index",
    "IsNull",
    "Key",
    "Literal",
    "Node",
    "Not",
    "Or",
    "RegexMatch",
    "Step",
    "TryCast",
]
