"""Flink SQL value semantics reproduced in Python, shared by the embedded engine and ``explain``.

Each helper mirrors one Flink 2.2 runtime function, verified with PyFlink (docs/operations.md):

* :func:`parse_decimal` is ``TRY_CAST(s AS DECIMAL(38, 10))``: Flink trims only ' ', '\\n' and
  '\\t', parses Java ``BigDecimal`` syntax (sign, digits -- any Unicode decimal digit --, one '.',
  exponent), rounds HALF_UP to 10 fraction digits and reads NULL when more than 28 integer digits
  remain. Anything else ('1_000', 'NaN', '0x10', '12L', '') is NULL.
  It is the reference (a ``Decimal``). The embedded engine compares DECIMAL(38, 10) values as
  ints scaled by 10^10 (exact, and far cheaper than ``Decimal``): :func:`to_scaled` is the cast in
  Rust (``cdcrouter._native.try_cast_decimal``), which hands non-ASCII text and huge exponents to
  :func:`parse_scaled`; :func:`scale_decimal` scales the literals at compile time.
* :func:`utf16_key` orders strings like Java's ``String.compareTo`` (UTF-16 code units), which is
  what Flink uses for ``<``/``>`` on STRING values; Python's code-point order differs only for
  characters above U+FFFF against U+E000..U+FFFF.
* :func:`to_scaled_timestamp` is a ``valueType: timestamp`` read: the DECIMAL cast (epoch ms), or
  else ISO-8601 text as epoch ms (:func:`parse_iso_timestamp_ms`); the generated SQL computes the
  same from the same regex (``flink_sql.timestamp_ms_sql``). Anything else is NULL.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import MAX_EMAX, MIN_EMIN, ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import Any

from cdcrouter._native import try_cast_decimal
from cdcrouter.ir.nodes import DECIMAL_PRECISION, DECIMAL_SCALE

_DEC_SYNTAX = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
# No exponent, at most 28 integer and 10 fraction digits: rounding and the range check cannot apply,
# and Decimal('2.5') compares and hashes like its quantized 2.5000000000, so it is used as is.
_SIMPLE = re.compile(r"[+-]?\d{1,28}(?:\.\d{0,10})?")
_CTX = Context(prec=DECIMAL_PRECISION + 40, rounding=ROUND_HALF_UP, Emax=MAX_EMAX, Emin=MIN_EMIN)
_QUANTUM = Decimal(1).scaleb(-DECIMAL_SCALE)
_LIMIT = Decimal(10) ** (DECIMAL_PRECISION - DECIMAL_SCALE)


def parse_decimal(s: str) -> Decimal | None:
    """``TRY_CAST(s AS DECIMAL(38, 10))`` for a non-null string (uncached)."""
    t = s.strip(" \n\t")
    if _SIMPLE.fullmatch(t):
        return Decimal(t)
    if not _DEC_SYNTAX.fullmatch(t):
        return None
    try:
        q = Decimal(t).quantize(_QUANTUM, rounding=ROUND_HALF_UP, context=_CTX)
    except (InvalidOperation, ValueError, OverflowError):
        return None
    if q.copy_abs() >= _LIMIT:  # not abs(): it rounds to the default context's 28 digits
        return None
    return q


def parse_scaled(s: str) -> int | None:
    """:func:`parse_decimal` times 10^10 as an int: the native cast's fallback (non-ASCII text)."""
    d = parse_decimal(s)
    return None if d is None else scale_decimal(d)


def scale_decimal(d: Decimal | int) -> int:
    """An exact DECIMAL(38, 10) value times 10^10; ValueError if it has more fraction digits."""
    q = Decimal(d).scaleb(DECIMAL_SCALE, _CTX)
    if q != q.to_integral_value():
        raise ValueError(f"{d} has more than {DECIMAL_SCALE} fraction digits")
    return int(q)


to_scaled = try_cast_decimal
"""``TRY_CAST(s AS DECIMAL(38, 10))`` times 10^10 as an int, None for NULL; None passes through."""


def utf16_key(s: str) -> bytes:
    """A sort key giving Java's UTF-16 code-unit order."""
    return s.encode("utf-16-be", "surrogatepass")


# The ISO-8601 text a ``valueType: timestamp`` test reads besides epoch-ms numbers: what capture
# writes (``2024-05-01T08:00:00.25Z``), plus a numeric offset (``+05:30``) for other producers.
# Years 0001-9999 only: capture's expanded years (``-0043-...``, ``+10000-...``) and ``infinity``
# read NULL. The generated Flink SQL matches this regex too (flink_sql.timestamp_ms_sql, year 0000 out).
ISO_TIMESTAMP_REGEX = (
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])"
    r"(\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
)
"""The whole text must match (unanchored here: each dialect anchors it its own way)."""
_ISO_TIMESTAMP = re.compile(ISO_TIMESTAMP_REGEX)
_UNIX_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


def parse_iso_timestamp_ms(s: str) -> Decimal | None:
    """Epoch milliseconds (exact, up to 6 fraction digits) of ISO-8601 text, None if not one."""
    m = _ISO_TIMESTAMP.fullmatch(s)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    try:
        days = dt.date(year, month, day).toordinal() - _UNIX_EPOCH_ORDINAL
    except ValueError:  # year 0000, month 13, February 30, ...
        return None
    zone = m.group(8)
    offset_min = 0 if zone == "Z" else int(zone[1:3]) * 60 + int(zone[4:6])
    if zone[0] == "-":
        offset_min = -offset_min
    ms = ((days * 24 + hour) * 60 + minute - offset_min) * 60_000 + second * 1000
    nanos = (m.group(7) or ".")[1:].ljust(9, "0")
    return Decimal(ms) + Decimal(int(nanos)).scaleb(-6)


def to_scaled_timestamp(s: Any) -> int | None:
    """``valueType: timestamp``'s read: an epoch-ms number or ISO-8601 text, times 10^10; else None."""
    scaled = try_cast_decimal(s)
    if scaled is not None or not isinstance(s, str):
        return scaled
    ms = parse_iso_timestamp_ms(s)
    return None if ms is None else scale_decimal(ms)
