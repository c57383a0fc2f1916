"""YAML -> raw model, keeping the line and column of every key and value.

ruamel.yaml's round-trip loader records positions (0-based) on mappings and sequences; we convert
them to 1-based :class:`Span` objects at once. Shape problems (wrong types, missing or unknown
keys, YAML syntax) become ``Y`` diagnostics; nothing here raises a traceback at the user.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from cdcrouter.filters.diagnostics import Collector, closest
from cdcrouter.filters.raw import RawCondition, RawFilter, RawFilterSet, RawGroup, RawItem, RawList, RawScalar
from cdcrouter.filters.span import Span

TOP_KEYS = ("filters", "version")
FILTER_KEYS = (
    "id",
    "name",
    "description",
    "consumerId",
    "outputTopic",
    "enabled",
    "conditions",
    "conditionLogic",
)
FILTER_REQUIRED = ("id", "consumerId", "outputTopic", "conditions")
CONDITION_KEYS = ("field", "operator", "value", "values", "min", "max", "valueType", "logicalOperator")
GROUP_KINDS = ("any", "all", "not", "anyEntity")
GROUP_KEYS = (*GROUP_KINDS, "logicalOperator")

_PLAIN_NUMBER = re.compile(r"[-+]?[0-9._]+(?:[eE][-+]?[0-9]+)?")


@dataclass
class _YMap:
    span: Span
    keys: dict[str, Span] = field(default_factory=dict)
    values: dict[str, _YNode] = field(default_factory=dict)


@dataclass
class _YSeq:
    span: Span
    items: list[_YNode] = field(default_factory=list)


_YNode = _YMap | _YSeq | RawScalar


class _Converter:
    """Turns ruamel's commented containers into positioned nodes."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.lines = text.splitlines()

    def span(self, line0: int, col0: int) -> Span:
        return Span(self.file, line0 + 1, col0 + 1)

    def scalar(self, value: object, line0: int, col0: int) -> RawScalar:
        text = None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and line0 < len(self.lines):
            m = _PLAIN_NUMBER.match(self.lines[line0], col0)
            text = m.group(0) if m else None
        return RawScalar(value, self.span(line0, col0), text)

    def node(self, value: object, line0: int, col0: int) -> _YNode:
        if isinstance(value, CommentedMap):
            out = _YMap(self.span(value.lc.line, value.lc.col))
            for k, v in value.items():
                kl, kc = value.lc.key(k)
                vl, vc = value.lc.value(k)
                key = str(k)
                out.keys[key] = self.span(kl, kc)
                out.values[key] = self.node(v, vl, vc)
            return out
        if isinstance(value, CommentedSeq):
            seq = _YSeq(self.span(value.lc.line, value.lc.col))
            for i, v in enumerate(value):
                il, ic = value.lc.item(i)
                seq.items.append(self.node(v, il, ic))
            return seq
        return self.scalar(value, line0, col0)


def _kind(node: _YNode) -> str:
    if isinstance(node, _YMap):
        return "a mapping"
    if isinstance(node, _YSeq):
        return "a list"
    if node.value is None:
        return "null"
    return f"a {type(node.value).__name__}"


def _span_of(node: _YNode) -> Span:
    return node.span


class _Builder:
    def __init__(self, diags: Collector) -> None:
        self.d = diags

    def check_keys(self, m: _YMap, allowed: tuple[str, ...], what: str, filter_id: str | None = None) -> None:
        for key, kspan in m.keys.items():
            if key not in allowed:
                guess = closest(key, allowed)
                self.d.add(
                    "Y004",
                    f"unknown key '{key}' in {what}",
                    kspan,
                    filter_id,
                    f"did you mean '{guess}'?" if guess else f"allowed keys: {', '.join(allowed)}",
                )

    def scalar(self, m: _YMap, key: str, what: str, filter_id: str | None) -> RawScalar | None:
        node = m.values.get(key)
        if node is None:
            return None
        if not isinstance(node, RawScalar):
            self.d.add(
                "Y002",
                f"'{key}' in {what} must be a single value, not {_kind(node)}",
                node.span,
                filter_id,
                f"write `{key}: <value>`",
            )
            return None
        return node

    def filterset(self, root: object, conv: _Converter, file: str) -> RawFilterSet:
        top = conv.node(root, 0, 0)
        if not isinstance(top, _YMap):
            self.d.add(
                "Y002",
                f"a filter file must be a mapping with a 'filters:' list, not {_kind(top)}",
                top.span,
                hint="start the file with `filters:` followed by a list of filters",
            )
            return RawFilterSet(file, (), top.span)
        self.check_keys(top, TOP_KEYS, "the top level")
        flist = top.values.get("filters")
        if flist is None:
            self.d.add("Y003", "missing required key 'filters'", top.span, hint="add `filters:` with a list")
            return RawFilterSet(file, (), top.span)
        if not isinstance(flist, _YSeq):
            self.d.add(
                "Y002",
                f"'filters' must be a list, not {_kind(flist)}",
                flist.span,
                hint="write each filter as a list item starting with `- id: ...`",
            )
            return RawFilterSet(file, (), top.span)
        filters = tuple(f for f in (self.filter(n) for n in flist.items) if f is not None)
        return RawFilterSet(file, filters, top.span)

    def filter(self, node: _YNode) -> RawFilter | None:
        if not isinstance(node, _YMap):
            self.d.add(
                "Y002",
                f"a filter must be a mapping, not {_kind(node)}",
                node.span,
                hint="each filter needs id, consumerId, outputTopic and conditions",
            )
            return None
        fid_node = node.values.get("id")
        fid = str(fid_node.value) if isinstance(fid_node, RawScalar) and fid_node.value is not None else None
        self.check_keys(node, FILTER_KEYS, "a filter", fid)
        for key in FILTER_REQUIRED:
            if key not in node.values:
                self.d.add(
                    "Y003",
                    f"filter is missing required key '{key}'",
                    node.span,
                    fid,
                    f"add `{key}:` to this filter",
                )
        conds = node.values.get("conditions")
        items: tuple[RawItem, ...] = ()
        cspan = None
        if conds is not None:
            cspan = conds.span
            items = self.items(conds, "conditions", fid)
        return RawFilter(
            span=node.span,
            id=self.scalar(node, "id", "a filter", fid),
            name=self.scalar(node, "name", "a filter", fid),
            description=self.scalar(node, "description", "a filter", fid),
            consumer_id=self.scalar(node, "consumerId", "a filter", fid),
            output_topic=self.scalar(node, "outputTopic", "a filter", fid),
            enabled=self.scalar(node, "enabled", "a filter", fid),
            condition_logic=self.scalar(node, "conditionLogic", "a filter", fid),
            conditions=items,
            conditions_span=cspan,
        )

    def items(self, node: _YNode, key: str, fid: str | None) -> tuple[RawItem, ...]:
        if isinstance(node, _YMap):  # a single item where a list is expected: accept it
            one = self.item(node, fid)
            return (one,) if one is not None else ()
        if not isinstance(node, _YSeq):
            self.d.add(
                "Y002",
                f"'{key}' must be a list of conditions, not {_kind(node)}",
                node.span,
                fid,
                "write each condition as a list item starting with `- field: ...`",
            )
            return ()
        return tuple(i for i in (self.item(n, fid) for n in node.items) if i is not None)

    def item(self, node: _YNode, fid: str | None) -> RawItem | None:
        if not isinstance(node, _YMap):
            self.d.add(
                "Y002",
                f"a condition must be a mapping, not {_kind(node)}",
                node.span,
                fid,
                "write `- field: ...` with `operator:` and a value",
            )
            return None
        groups = [k for k in GROUP_KINDS if k in node.values]
        if groups and "field" not in node.values and "operator" not in node.values:
            if len(groups) > 1:
                self.d.add(
                    "Y002",
                    f"a group has exactly one of any/all/not/anyEntity, found {', '.join(groups)}",
                    node.keys[groups[1]],
                    fid,
                    "nest one group inside the other",
                )
            self.check_keys(node, GROUP_KEYS, "a group", fid)
            kind = groups[0]
            inner = self.items(node.values[kind], kind, fid)
            return RawGroup(
                span=node.keys[kind],
                kind=kind,
                items=inner,
                logical_operator=self.scalar(node, "logicalOperator", "a group", fid),
            )
        self.check_keys(node, CONDITION_KEYS, "a condition", fid)
        for key in ("field", "operator"):
            if key not in node.values:
                self.d.add(
                    "Y003",
                    f"condition is missing required key '{key}'",
                    node.span,
                    fid,
                    f"add `{key}:` (or use a group: any, all, not, anyEntity)",
                )
        values = node.values.get("values")
        raw_values = None
        if values is not None:
            if isinstance(values, _YSeq):
                scalars = []
                for v in values.items:
                    if isinstance(v, RawScalar):
                        scalars.append(v)
                    else:
                        self.d.add(
                            "Y002", f"each of 'values' must be a single value, not {_kind(v)}", v.span, fid
                        )
                raw_values = RawList(tuple(scalars), values.span)
            else:
                self.d.add(
                    "Y002",
                    f"'values' must be a list, not {_kind(values)}",
                    values.span,
                    fid,
                    "write `values: [a, b]`",
                )
        return RawCondition(
            span=node.span,
            field=self.scalar(node, "field", "a condition", fid),
            operator=self.scalar(node, "operator", "a condition", fid),
            value=self.scalar(node, "value", "a condition", fid),
            values=raw_values,
            min=self.scalar(node, "min", "a condition", fid),
            max=self.scalar(node, "max", "a condition", fid),
            value_type=self.scalar(node, "valueType", "a condition", fid),
            logical_operator=self.scalar(node, "logicalOperator", "a condition", fid),
        )


def parse_raw(text: str, file: str, diags: Collector) -> RawFilterSet:
    """Parse YAML text into the raw model, adding ``Y`` diagnostics to ``diags``."""
    yaml = YAML(typ="rt")
    try:
        root = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        span = Span(file, mark.line + 1, mark.column + 1) if mark else Span(file, 1, 1)
        problem = exc.problem or "invalid YAML"
        code = "Y005" if "duplicate" in problem else "Y001"
        context = f" ({exc.context})" if exc.context and code == "Y001" else ""
        diags.add(
            code,
            f"YAML syntax error: {problem}{context}",
            span,
            hint="remove the repeated key" if code == "Y005" else "check indentation, colons and quotes here",
        )
        return RawFilterSet(file, (), Span(file, 1, 1))
    except YAMLError as exc:
        diags.add("Y001", f"YAML error: {exc}", Span(file, 1, 1), hint="check the file is valid YAML")
        return RawFilterSet(file, (), Span(file, 1, 1))
    if root is None:
        diags.add("Y003", "the filter file is empty", Span(file, 1, 1), hint="add `filters:` with a list")
        return RawFilterSet(file, (), Span(file, 1, 1))
    return _Builder(diags).filterset(root, _Converter(file, text), file)
