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
"""

from __future__ import annotations

import re
from decimal import MAX_EMAX, MIN_EMIN, ROUND_HALF_UP, Context, Decimal, InvalidOperation

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
