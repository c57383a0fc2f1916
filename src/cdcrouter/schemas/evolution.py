"""Evolved raw writer schemas: can the contract read them, and the filtered schema they imply.

Capture upgrades first, so the router meets raw records written with a newer schema than the one
compiled into it. :func:`resolution_problem` says, before any record is read, why Avro schema
resolution from such a writer schema to the contract would fail, naming the field (a dead letter's
reason must say what to fix). :func:`derived_filtered_schema` is the writer schema plus the trailing
``filterMetadata`` record: the schema of a filtered record whose body is the raw body passed
through, so a filtered record carries every field its raw record carried.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cdcrouter.schemas import filtered_schema

__all__ = [
    "FILTERED_NAME",
    "derived_filtered_schema",
    "derived_filtered_text",
    "projection_gaps",
    "resolution_problem",
]

FILTERED_NAME = "FilteredBusinessEvent"
_FILTER_METADATA_NS = "io.cdcrouter.events"
PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
# writer type -> reader types it is promoted to (Avro specification, schema resolution)
PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


def named_types(parsed: Any) -> dict[str, Any]:
    """Full name -> definition of every named type in a fastavro-parsed schema."""
    return dict(parsed.get("__named_schemas", {})) if isinstance(parsed, dict) else {}


def deref(t: Any, named: Mapping[str, Any]) -> Any:
    """A type with a by-name reference replaced by its definition."""
    while isinstance(t, str) and t not in PRIMITIVES:
        t = named[t]
    return t


def kind(t: Any) -> str:
    if isinstance(t, str):
        return t
    if isinstance(t, list):
        return "union"
    return str(t["type"])


def short(name: str) -> str:
    """A type's name without its namespace."""
    return name.rpartition(".")[2]


def describe(t: Any, named: Mapping[str, Any]) -> str:
    t = deref(t, named)
    k = kind(t)
    if k == "union":
        return "[" + ", ".join(describe(b, named) for b in t) + "]"
    if k in ("record", "enum", "fixed"):
        return f"{k} {t['name']}"
    if k == "array":
        return f"array of {describe(t['items'], named)}"
    if k == "map":
        return f"map of {describe(t['values'], named)}"
    return k


def resolution_problem(writer: Any, reader: Any) -> str | None:
    """Why ``writer`` (a fastavro-parsed schema) cannot be read as ``reader``, or None if it can.

    Strict where Avro is lazy: a writer union branch the reader cannot take is a problem even if
    no record uses it yet, because the registry has accepted the schema and any record may."""
    return _Resolver(named_types(writer), named_types(reader)).problem(writer, reader, "")


class _Resolver:
    def __init__(self, wnamed: Mapping[str, Any], rnamed: Mapping[str, Any]) -> None:
        self.wnamed, self.rnamed = wnamed, rnamed
        self.seen: set[tuple[str, str]] = set()  # record pairs already compared (recursive types)

    def mismatch(self, path: str, w: Any, r: Any) -> str:
        where = path or "the record"
        return (
            f"{where}: the writer schema has {describe(w, self.wnamed)}, "
            f"the contract reads {describe(r, self.rnamed)}"
        )

    def problem(self, writer: Any, reader: Any, path: str) -> str | None:
        w, r = deref(writer, self.wnamed), deref(reader, self.rnamed)
        wk, rk = kind(w), kind(r)
        if wk == "union":
            for branch in w:
                found = self.problem(branch, r, path)
                if found:
                    return found
            return None
        if rk == "union":
            if any(self.problem(w, branch, path) is None for branch in r):
                return None
            return self.mismatch(path, w, r)
        if wk != rk:
            return None if rk in PROMOTIONS.get(wk, ()) else self.mismatch(path, w, r)
        if rk == "record":
            return self.record(w, r, path)
        if rk == "array":
            return self.problem(w["items"], r["items"], f"{path}[]")
        if rk == "map":
            return self.problem(w["values"], r["values"], f"{path}{{}}")
        if rk == "enum":
            extra = [s for s in w["symbols"] if s not in r["symbols"]]
            if extra and "default" not in r:
                unknown = ", ".join(extra)
                return f"{path}: the writer's enum has symbol(s) {unknown} the contract does not know"
            return None
        if rk == "fixed" and w.get("size") != r.get("size"):
            return self.mismatch(path, w, r)
        return None

    def record(self, w: Any, r: Any, path: str) -> str | None:
        # unqualified names, as the Avro specification (1.10+) and fastavro match them
        if short(w["name"]) not in {short(n) for n in (r["name"], *r.get("aliases", ()))}:
            return self.mismatch(path, w, r)
        if (w["name"], r["name"]) in self.seen:
            return None
        self.seen.add((w["name"], r["name"]))
        by_name = {f["name"]: f for f in w["fields"]}
        for field in r["fields"]:
            sub = f"{path}.{field['name']}" if path else field["name"]
            found = by_name.get(field["name"])
            if found is None:
                found = next((by_name[a] for a in field.get("aliases", ()) if a in by_name), None)
            if found is None:
                if "default" not in field:
                    return f"{sub} is missing from the writer schema, and the contract has no default for it"
                continue
            problem = self.problem(found["type"], field["type"], sub)
            if problem:
                return problem
        return None


def derived_filtered_schema(writer: Mapping[str, Any]) -> dict[str, Any]:
    """``writer`` (the raw writer schema's JSON) plus the trailing ``filterMetadata`` field.

    Avro encodes a record as the concatenation of its fields, so a raw body written with
    ``writer`` followed by the encoded FilterMetadata is a valid record of this schema. The record
    is renamed FilteredBusinessEvent in the writer's namespace (so its nested types keep their
    names); FilterMetadata keeps its own full name. ValueError if the writer already has a
    ``filterMetadata`` field or a FilterMetadata type."""
    if not isinstance(writer, Mapping) or writer.get("type") != "record":
        raise ValueError("the writer schema is not a record")
    fields = list(writer.get("fields") or [])
    if any(f.get("name") == "filterMetadata" for f in fields):
        raise ValueError("the writer schema already has a filterMetadata field")
    name = str(writer.get("name", ""))
    namespace = name.rpartition(".")[0] if "." in name else writer.get("namespace")
    meta = dict(filtered_schema()["fields"][-1])
    meta["type"] = {**meta["type"], "namespace": _FILTER_METADATA_NS}
    if _FILTER_METADATA_NS + ".FilterMetadata" in _declared_names(writer, namespace):
        raise ValueError("the writer schema already declares a FilterMetadata type")
    out: dict[str, Any] = {"type": "record", "name": FILTERED_NAME}
    if namespace:
        out["namespace"] = namespace
    if writer.get("doc"):
        out["doc"] = writer["doc"]
    out["fields"] = [*fields, meta]
    return out


def derived_filtered_text(writer_text: str) -> str:
    """:func:`derived_filtered_schema` of a writer schema's text, as compact JSON: the one form the
    router and ``schemas apply`` register and look up."""
    import json

    return json.dumps(derived_filtered_schema(json.loads(writer_text)), separators=(",", ":"))


def _declared_names(schema: Any, namespace: str | None, out: set[str] | None = None) -> set[str]:
    """Full names of the named types declared anywhere in a schema's JSON."""
    out = set() if out is None else out
    if isinstance(schema, list):
        for branch in schema:
            _declared_names(branch, namespace, out)
    elif isinstance(schema, Mapping):
        t = schema.get("type")
        if t in ("record", "enum", "fixed", "error"):
            name = str(schema.get("name", ""))
            ns = name.rpartition(".")[0] if "." in name else schema.get("namespace", namespace)
            out.add(name if "." in name else f"{ns}.{name}" if ns else name)
            namespace = ns
            for f in schema.get("fields") or ():
                _declared_names(f.get("type"), namespace, out)
        elif t == "array":
            _declared_names(schema.get("items"), namespace, out)
        elif t == "map":
            _declared_names(schema.get("values"), namespace, out)
        elif isinstance(t, list | Mapping):
            _declared_names(t, namespace, out)
    return out


# contract record full name -> its key in a projection (cdcrouter._native.Projection's arguments)
PROJECTED_RECORDS = {
    "io.cdcrouter.events.BusinessEvent": "event",
    "io.cdcrouter.events.EventHeader": "header",
    "io.cdcrouter.events.EventBody": "body",
    "io.cdcrouter.events.Entity": "entity",
    "io.cdcrouter.events.SourceMetadata": "source",
}
Spec = Any  # a skip spec: a type name, or (kind, argument)


def projection_gaps(writer: Any, reader: Any) -> dict[str, list[list[Spec]]] | None:
    """Where ``writer`` (parsed) adds fields to the contract ``reader`` (parsed), per contract record:
    ``{"header": [[skip specs before uuid], [before eventName], ..., [after the last field]], ...}``.

    Only for writer schemas that have every contract field, in the contract's order, with exactly
    the contract's encoding (same types, same union branch order, no logical types), and no
    recursive added type: then the native decoder reads past the added fields and fills the
    contract's dict. None for any other shape (fastavro's schema resolution reads those)."""
    return _Projector(named_types(writer), named_types(reader)).run(writer, reader)


class _Projector:
    def __init__(self, wnamed: Mapping[str, Any], rnamed: Mapping[str, Any]) -> None:
        self.wnamed, self.rnamed = wnamed, rnamed
        self.gaps: dict[str, list[list[Spec]]] = {}

    def run(self, writer: Any, reader: Any) -> dict[str, list[list[Spec]]] | None:
        if not self.same(writer, reader) or set(self.gaps) != set(PROJECTED_RECORDS.values()):
            return None
        return self.gaps

    def same(self, wt: Any, rt: Any) -> bool:
        w, r = deref(wt, self.wnamed), deref(rt, self.rnamed)
        wk, rk = kind(w), kind(r)
        if wk != rk:
            return False
        if rk == "record":
            return self.record(w, r)
        if rk == "array":
            return self.same(w["items"], r["items"])
        if rk == "map":
            return self.same(w["values"], r["values"])
        if rk == "union":
            return len(w) == len(r) and all(self.same(a, b) for a, b in zip(w, r, strict=True))
        return rk in PRIMITIVES and not (isinstance(w, dict) and w.get("logicalType"))

    def record(self, w: Any, r: Any) -> bool:
        key = PROJECTED_RECORDS.get(r["name"])
        if key is None or short(w["name"]) != short(r["name"]) or key in self.gaps:
            return False
        contract = [f["name"] for f in r["fields"]]
        gaps: list[list[Spec]] = [[] for _ in range(len(contract) + 1)]
        self.gaps[key] = gaps
        i = 0
        for f in w["fields"]:
            if i < len(contract) and f["name"] == contract[i]:
                if not self.same(f["type"], r["fields"][i]["type"]):
                    return False
                i += 1
            elif f["name"] in contract:
                return False  # a contract field out of the contract's order
            else:
                spec = self.skip_spec(f["type"], ())
                if spec is None:
                    return False
                gaps[i].append(spec)
        return i == len(contract)

    def skip_spec(self, t: Any, enclosing: tuple[str, ...]) -> Spec | None:
        t = deref(t, self.wnamed)
        k = kind(t)
        if k in PRIMITIVES:
            return k
        if k == "enum":
            return "enum"
        if k == "fixed":
            return ("fixed", int(t["size"]))
        if k == "array" or k == "map":
            inner = self.skip_spec(t["items" if k == "array" else "values"], enclosing)
            return None if inner is None else (k, inner)
        if k == "union":
            branches = [self.skip_spec(b, enclosing) for b in t]
            return None if any(b is None for b in branches) else ("union", branches)
        if k == "record" and t["name"] not in enclosing:
            fields = [self.skip_spec(f["type"], (*enclosing, t["name"])) for f in t["fields"]]
            return None if any(f is None for f in fields) else ("record", fields)
        return None  # a recursive record: fastavro reads it
