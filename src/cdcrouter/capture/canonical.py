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
timestamp      the same form; a timestamp without time zone is read as UTC. Outside years
               1-9999: ISO-8601 expanded years (``-0043-03-15T12:00:00Z`` is 44 BC,
               ``+10000-01-01T00:00:00Z``); ``infinity`` / ``-infinity`` as they are
json / jsonb   flattened to dotted keys (``loan.terms.months``); array items by index
               (``loan.items.0``); JSON numbers as written, booleans ``true``/``false``, JSON
               null as null, empty object/array as ``{}`` / ``[]``. A dot in a key (or a
               column name) is escaped: ``{"a.b": 1}`` is ``loan.a\\.b`` (see attribute_key)
everything     PostgreSQL's text output as is (text, uuid, date, time, interval, enum, bytea as
else           ``\\x...`` hex, inet, ...)
NULL           null (``None``)
=============  ===========================================================================
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Literal

Kind = Literal["plain", "bool", "json", "timestamptz", "timestamp"]

_BOOL = {"t": "true", "f": "false", "true": "true", "false": "false"}


def canonical_bool(text: str) -> str:
    return _BOOL.get(text, text)


def canonical_timestamp(text: str) -> str:
    """PostgreSQL's timestamp text (any offset, or none, or ISO with ``Z``) -> UTC ISO-8601 ``Z``.

    ``2024-05-01 10:00:00.5+00`` -> ``2024-05-01T10:00:00.5Z``. Total over PostgreSQL's range:
    BC and 5-digit years use ISO-8601's expanded years with astronomical numbering (1 BC is
    ``0000``, 44 BC is ``-0043``, year 10000 is ``+10000``), as Java's ISO formatter prints
    them; ``infinity`` and ``-infinity`` have no ISO form and stay as they are.
    """
    if text[4:5] == "-":  # a 4-digit year (everything else goes through the general parser)
        if text.endswith("+00"):  # the common case: the session runs with TimeZone=UTC
            return text[:-3].replace(" ", "T", 1) + "Z"
        if text.endswith("Z") and "T" in text:
            return _trim_fraction(text[:-1]) + "Z"
    return _general_timestamp(text)


_TIMESTAMP = re.compile(
    r"([+-]?)(\d{4,})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d+))?"
    r"(?:(Z)|([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?)?( BC)?"
)


def _general_timestamp(text: str) -> str:
    m = _TIMESTAMP.fullmatch(text)
    if m is None:
        return text  # infinity, -infinity (and anything unexpected) as PostgreSQL printed it
    sign, y, mo, d, hh, mi, ss, frac, _z, off_sign, off_h, off_m, off_s, bc = m.groups()
    year = -int(y) if sign == "-" else int(y)
    if bc:
        year = 1 - year  # astronomical numbering: 1 BC is year 0
    seconds = int(hh) * 3600 + int(mi) * 60 + int(ss)
    if off_sign:
        offset = int(off_h) * 3600 + int(off_m or 0) * 60 + int(off_s or 0)
        seconds -= offset if off_sign == "+" else -offset
    days = _days_from_civil(year, int(mo), int(d)) + seconds // 86400
    seconds %= 86400
    year, month, day = _civil_from_days(days)
    clock = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    out = f"{_year_text(year)}-{month:02d}-{day:02d}T{clock}"
    frac = (frac or "").rstrip("0")
    return f"{out}.{frac}Z" if frac else out + "Z"


def timestamp_from_epoch_us(micros: int) -> str:
    """Microseconds since 1970 (Debezium's MicroTimestamp) as timestamp text that
    :func:`canonical_timestamp` reads, for any year (``datetime`` stops at years 1-9999)."""
    days, us = divmod(micros, 86_400_000_000)
    year, month, day = _civil_from_days(days)
    secs, frac = divmod(us, 1_000_000)
    text = (
        f"{_year_text(year)}-{month:02d}-{day:02d} {secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"
    )
    return text + (f".{frac:06d}".rstrip("0") if frac else "")


def date_from_epoch_days(days: int) -> str:
    """Days since 1970 (Debezium's Date) as PostgreSQL prints the date (``DateStyle=ISO``),
    for any year: ``0044-03-15 BC``, ``10000-01-01``."""
    year, month, day = _civil_from_days(days)
    if year <= 0:
        return f"{1 - year:04d}-{month:02d}-{day:02d} BC"
    return f"{year:04d}-{month:02d}-{day:02d}"


def _year_text(year: int) -> str:
    """ISO-8601 year: 4 digits for 0-9999, else signed (expanded) as Java's ISO formatter."""
    if 0 <= year <= 9999:
        return f"{year:04d}"
    return f"+{year}" if year > 0 else f"-{-year:04d}"


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date, for any year (astronomical)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z: int) -> tuple[int, int, int]:
    """The inverse of :func:`_days_from_civil`."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (m <= 2), m, d


def _trim_fraction(text: str) -> str:
    if "." not in text:
        return text
    head, frac = text.rsplit(".", 1)
    frac = frac.rstrip("0")
    return f"{head}.{frac}" if frac else head


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_json(text: str) -> object:
    """JSON with numbers kept as their exact source text (no float rounding).

    Raises:
        ValueError: not JSON, or JSON that has no UTF-8 form: PostgreSQL's ``json`` type (not
            ``jsonb``) stores a lone surrogate escape such as ``"\\ud800"``, which would make
            a string no Avro or Kafka record can hold.
    """
    value = json.loads(text, parse_float=str, parse_int=str, parse_constant=str)
    if "\\u" in text and _SURROGATE_ESCAPE.search(text) and _has_surrogate(value):
        raise ValueError("a lone UTF-16 surrogate escape (\\ud800-\\udfff) has no UTF-8 form")
    return value


def _has_surrogate(value: object) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def attribute_key(name: str) -> str:
    """One segment of an ``updatedAttributes`` key (a column name or a JSON object key).

    Segments are joined with dots, so a dot inside a segment is written ``\\.`` and a backslash
    ``\\\\``: ``{"a.b": 1}`` and ``{"a": {"b": 2}}`` in column ``loan`` give ``loan.a\\.b`` and
    ``loan.a.b``, never the same key. Names without dots or backslashes are unchanged.
    """
    if "." in name or "\\" in name:
        return name.replace("\\", "\\\\").replace(".", "\\.")
    return name


def flatten_json(prefix: str, value: object) -> Iterator[tuple[str, str | None]]:
    """Yield ``(dotted.key, canonical string or None)`` for a parsed JSON value.

    ``prefix`` is used as given (the caller escapes it); object keys are escaped with
    :func:`attribute_key`, so different JSON paths never give the same key.
    """
    if isinstance(value, dict):
        if not value:
            yield prefix, "{}"
        for k, v in value.items():
            k = attribute_key(k)
            yield from flatten_json(f"{prefix}.{k}" if prefix else k, v)
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
    key = attribute_key(column)
    if text is None:
        yield key, None
    elif kind == "plain":
        yield key, text
    elif kind == "bool":
        yield key, canonical_bool(text)
    elif kind == "json":
        try:
            parsed = parse_json(text)
        except ValueError:
            yield key, text
        else:
            yield from flatten_json(key, parsed)
    else:  # timestamptz, timestamp
        yield key, canonical_timestamp(text)


def canonical_scalar(kind: Kind, text: str | None) -> str | None:
    """One canonical string for a (non-JSON) value: used for entity ids."""
    if text is None:
        return None
    if kind == "bool":
        return canonical_bool(text)
    if kind in ("timestamptz", "timestamp"):
        return canonical_timestamp(text)
    return text
