"""Raw events from JSON files (for ``explain`` and rule tests), shaped like fastavro's decode.

Missing fields are filled so hand-written fixtures can stay short: a field with an Avro default
gets it; a required field gets an empty value ("" / 0 / [] / {}). Wrong types are errors that
name the file, line and field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from cdcrouter.errors import CdcrouterError
from cdcrouter.filters.schema import RAW_SCHEMA, load_schema

Event = dict[str, Any]


class EventError(CdcrouterError):
    """An event file or object that is not a raw business event."""


_EMPTY = {"string": "", "long": 0, "int": 0, "boolean": False}


def _fill(t: Any, value: Any, where: str, missing: bool) -> Any:
    if isinstance(t, list):  # a nullable union
        if value is None:
            return None
        t = next(x for x in t if x != "null")
    if missing:
        value = None
    if isinstance(t, str):
        if value is None:
            return _EMPTY[t]
        if t == "string" and not isinstance(value, str):
            raise EventError(f"{where}: expected a string, got {value!r}", hint="quote the value")
        if t in ("long", "int") and (not isinstance(value, int) or isinstance(value, bool)):
            raise EventError(
                f"{where}: expected an integer, got {value!r}", hint="epoch milliseconds as a number"
            )
        return value
    kind = t["type"]
    if kind == "record":
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise EventError(f"{where}: expected an object, got {type(value).__name__}")
        names = {f["name"] for f in t["fields"]}
        extra = sorted(set(value) - names)
        if extra:
            raise EventError(
                f"{where}: unknown field(s) {', '.join(extra)}", hint=f"fields: {', '.join(names)}"
            )
        out = {}
        for f in t["fields"]:
            has = f["name"] in value
            v = value.get(f["name"], f.get("default"))
            out[f["name"]] = _fill(
                f["type"], v, f"{where}.{f['name']}", missing=not has and "default" not in f
            )
        return out
    if kind == "array":
        if value is None:
            return []
        if not isinstance(value, list):
            raise EventError(f"{where}: expected a list")
        return [_fill(t["items"], v, f"{where}[{i}]", False) for i, v in enumerate(value)]
    if kind == "map":
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise EventError(f"{where}: expected an object of attributes")
        out_map = {}
        for k, v in value.items():
            if v is not None and not isinstance(v, str):
                raise EventError(
                    f"{where}.{k}: attribute values are strings, got {v!r}",
                    hint=f'write "{v}" (capture writes every attribute as canonical text)',
                )
            out_map[str(k)] = v
        return out_map
    raise EventError(f"{where}: unsupported schema type {kind}")  # pragma: no cover


def normalize_event(obj: Any, where: str = "event") -> Event:
    """A complete raw event dict from a possibly partial one (see module docstring)."""
    if not isinstance(obj, dict):
        raise EventError(f"{where}: an event must be a JSON object")
    return _fill(load_schema(RAW_SCHEMA), obj, where, False)


def read_events(path: str | Path) -> list[Event]:
    """One JSON event, a JSON list of events, or JSON lines (one event per line)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise EventError(f"cannot read {p}: {exc.strerror}", hint="check the path") from exc
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        doc = None
        events = []
        for n, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise EventError(f"{p}:{n}: not JSON: {exc}", hint="one JSON object per line") from exc
            events.append(normalize_event(obj, f"{p}:{n}"))
        return events
    if isinstance(doc, list):
        return [normalize_event(o, f"{p}[{i}]") for i, o in enumerate(doc)]
    return [normalize_event(doc, str(p))]
