"""Canonical string forms of PostgreSQL values: what ``updatedAttributes`` holds.

Both capture engines feed PostgreSQL's own text output (or Debezium values turned back into it)
through these functions, so the same row gives the same strings whichever engine read it:

=============  ===========================================================================
kind           canonical form
=============  ===========================================================================
number         exactly as PostgreSQL prints it (``numeric`` keeps its scale: ``12.50``; floats
               use PostgreSQL's shortest round-trip form); never through a Python float
bool           ``true`` / ``false``
timestamptz    UTC ISO-8601 with ``T`` and ``Z``: ``2024-05-01T10:00:00.5Z`` (fraction as
               PostgreSQL prints it: trailing zeros dropped, none when whole seconds)
timestamp      the same form; a timestamp without time zone is read as UTC
json / jsonb   flattened to dotted keys (``loan.terms.months``); array items by index
               (``loan.items.0``); JSON numbers as written, booleans ``true``/``false``, JSON
               null as null, empty object/array as ``{}`` / ``[]``
everything     PostgreSQL's text output as is (text, uuid, date, time, interval, enum, bytea as
else           ``\\x...`` hex, inet, ...)
NULL           null (``None``)
=============  ===========================================================================
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Literal

Kind = Literal["plain", "bool", "json", "timestamptz", "timestamp"]

_BOOL = {"t": "true", "f": "false", "true": "true", "false": "false"}


def canonical_bool(text: str) -> str:
    return _BOOL.get(text, text)


def canonical_timestamp(text: str) -> str:
    """``2024-05-01 10:00:00.5+00`` (or ISO with any offset, or no offset) -> ``2024-05-01T10:00:00.5Z``."""
    if text.endswith("+00"):  # the common case: the session runs with TimeZone=UTC
        return text[:-3].replace(" ", "T", 1) + "Z"
    if text.endswith("Z") and "T" in text:
        return _trim_fraction(text[:-1]) + "Z"
    if text in ("infinity", "-infinity") or text.endswith(" BC"):
        return text
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return text
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    out = dt.isoformat()  # microseconds as 6 digits when non-zero
    return _trim_fraction(out) + "Z"


def _trim_fraction(text: str) -> str:
    if "." not in text:
        return text
    head, frac = text.rsplit(".", 1)
    frac = frac.rstrip("0")
    return f"{head}.{frac}" if frac else head


def parse_json(text: str) -> object:
    """JSON with numbers kept as their exact source text (no float rounding)."""
    return json.loads(text, parse_float=str, parse_int=str, parse_constant=str)


def flatten_json(prefix: str, value: object) -> Iterator[tuple[str, str | None]]:
    """Yield ``(dotted.key, canonical string or None)`` for a parsed JSON value."""
    if isinstance(value, dict):
        if not value:
            yield prefix, "{}"
        for k, v in value.items():
            yield from flatten_json(f"{prefix}.{k}" if prefix else str(k), v)
    elif isinstance(value, list):
        if not value:
            yield prefix, "[]"
        for i, v in enumerate(value):
            yield from flatten_json(f"{prefix}.{i}" if prefix else str(i), v)
    elif value is None:
        yield prefix, None
    elif value is True:
        yield prefix, "true"
    elif value is False:
        yield prefix, "false"
    else:
        yield prefix, str(value)


def attributes(kind: Kind, column: str, text: str | None) -> Iterator[tuple[str, str | None]]:
    """The ``updatedAttributes`` entries one column value contributes."""
    if text is None:
        yield column, None
    elif kind == "plain":
        yield column, text
    elif kind == "bool":
        yield column, canonical_bool(text)
    elif kind == "json":
        try:
            parsed = parse_json(text)
        except ValueError:
            yield column, text
        else:
            yield from flatten_json(column, parsed)
    else:  # timestamptz, timestamp
        yield column, canonical_timestamp(text)


def canonical_scalar(kind: Kind, text: str | None) -> str | None:
    """One canonical string for a (non-JSON) value: used for entity ids."""
    if text is None:
        return None
    if kind == "bool":
        return canonical_bool(text)
    if kind in ("timestamptz", "timestamp"):
        return canonical_timestamp(text)
    return text
