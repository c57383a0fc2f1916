"""Field paths checked against the raw event's Avro schema.

Path syntax (``docs/filter-language.md``): dot-separated record fields; ``[n]`` (0-based) or
``[*]`` (any entity) after an array; everything after a map field is the map key, so
``...updatedAttributes.loan.loanAmount`` reads key ``loan.loanAmount``. A bracketed key,
``updatedAttributes['odd key']``, is accepted too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from cdcrouter.filters.diagnostics import closest
from cdcrouter.ir.nodes import Attr, Index, Key, Step

RAW_SCHEMA = "raw-business-event.avsc"
FILTERED_SCHEMA = "filtered-business-event.avsc"


@cache
def load_schema(name: str = RAW_SCHEMA) -> dict[str, Any]:
    """The packaged Avro schema ``name`` as parsed JSON."""
    return json.loads(resources.files("cdcrouter.schemas").joinpath(name).read_text("utf-8"))


@dataclass(frozen=True)
class ResolvedPath:
    """A path that exists in the schema.

    ``steps`` lead from the event root to the value, except when ``star`` is set: then
    ``steps[:star]`` reach the entity array and ``steps[star:]`` are read on each entity.
    """

    steps: tuple[Step, ...]
    type: str  # 'string' | 'long'
    nullable: bool
    star: int | None


class PathError(Exception):
    """A path that does not fit the schema; ``offset`` is the character where it goes wrong."""

    def __init__(self, message: str, hint: str | None, offset: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.offset = offset


_TOKEN = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\*|\d+)\]|\[('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\]")


def _unwrap(t: Any) -> tuple[Any, bool]:
    if isinstance(t, list):
        non_null = [x for x in t if x != "null"]
        return non_null[0], len(non_null) != len(t)
    return t, False


@lru_cache(maxsize=4096)
def resolve_path(path: str) -> ResolvedPath:
    """Resolve ``path`` against the raw event schema or raise :class:`PathError` (cached)."""
    if not path or path != path.strip():
        raise PathError(f"field path '{path}' is empty or has spaces around it", "remove the spaces")
    node: Any = load_schema(RAW_SCHEMA)
    steps: list[Step] = []
    star: int | None = None
    nullable = False
    pos = 0
    walked = ""
    while True:
        t, opt = _unwrap(node)
        nullable = nullable or opt
        if isinstance(t, dict) and t.get("type") == "map":
            if pos >= len(path):
                raise PathError(
                    f"'{walked}' is a map; name a key after it",
                    f"for example '{walked}.loan.loanAmount'",
                    pos,
                )
            if path[pos] == ".":
                key = path[pos + 1 :]
            else:
                m = _TOKEN.match(path, pos)
                if not m or not m.group(3) or m.end() != len(path):
                    raise PathError(
                        f"bad map key after '{walked}'",
                        f"write '{walked}.some.key' or {walked}['some key']",
                        pos,
                    )
                key = re.sub(r"\\(.)", r"\1", m.group(3)[1:-1])
            if not key:
                raise PathError(f"empty map key after '{walked}'", "name the attribute key", pos)
            steps.append(Key(key))
            vt, _ = _unwrap(t["values"])
            return ResolvedPath(tuple(steps), _leaf(vt), True, star)
        if pos >= len(path):
            if isinstance(t, str) and t in ("string", "long"):
                return ResolvedPath(tuple(steps), t, nullable, star)
            kind = "an array" if isinstance(t, dict) and t.get("type") == "array" else "a record"
            raise PathError(
                f"'{walked}' is {kind}, not a value a condition can test",
                _children_hint(walked, t),
                pos,
            )
        m = _TOKEN.match(path, pos)
        if m is None or (m.group(1) and pos > 0 and path[pos] != "."):
            raise PathError(f"cannot parse field path '{path}' at character {pos + 1}", None, pos)
        if isinstance(t, dict) and t.get("type") == "record":
            name = m.group(1)
            if name is None:
                raise PathError(f"'{walked}' is a record; use '.field', not an index", None, pos)
            fields = {f["name"]: f["type"] for f in t["fields"]}
            if name not in fields:
                guess = closest(name, fields)
                prefix = f"{walked}." if walked else ""
                raise PathError(
                    f"unknown field '{prefix}{name}'",
                    f"did you mean '{prefix}{guess}'?" if guess else f"fields here: {', '.join(fields)}",
                    pos + (1 if path[pos] == "." else 0),
                )
            steps.append(Attr(name))
            node = fields[name]
            walked = f"{walked}.{name}" if walked else name
        elif isinstance(t, dict) and t.get("type") == "array":
            idx = m.group(2)
            if idx is None:
                raise PathError(
                    f"'{walked}' is an array; index it with [0], [1], ... or [*] for any element",
                    f"for example '{walked}[0]' or '{walked}[*]'",
                    pos,
                )
            if idx == "*":
                if star is not None:
                    raise PathError("only one [*] is allowed in a path", None, pos)
                star = len(steps)
            else:
                steps.append(Index(int(idx)))
                nullable = True  # out-of-range index reads NULL
            node = t["items"]
            walked += f"[{idx}]"
        else:
            raise PathError(f"'{walked}' is a value and has no field '{path[pos:]}'", None, pos)
        pos = m.end()


def _leaf(t: Any) -> str:
    return t if isinstance(t, str) else "string"


def _children_hint(walked: str, t: Any) -> str | None:
    if isinstance(t, dict) and t.get("type") == "record":
        names = [f["name"] for f in t["fields"]]
        return "pick one of: " + ", ".join(f"{walked}.{n}" for n in names)
    if isinstance(t, dict) and t.get("type") == "array":
        return f"index it: {walked}[0].<field> or {walked}[*].<field>"
    return None


def all_paths() -> list[str]:
    """Every testable path template (map keys shown as ``<key>``), for docs and suggestions."""
    out: list[str] = []

    def visit(t: Any, prefix: str) -> None:
        t, _ = _unwrap(t)
        if isinstance(t, str):
            out.append(prefix)
        elif t.get("type") == "record":
            for f in t["fields"]:
                visit(f["type"], f"{prefix}.{f['name']}" if prefix else f["name"])
        elif t.get("type") == "array":
            visit(t["items"], prefix + "[0]")
        elif t.get("type") == "map":
            out.append(prefix + ".<key>")

    visit(load_schema(RAW_SCHEMA), "")
    return out
