"""Flink SQL value semantics reproduced in Python, shared by the embedded engine and ``explain``.

Each helper mirrors one Flink 2.2 runtime function, verified with PyFlink (docs/operations.md):

* :func:`to_decimal` is ``TRY_CAST(s AS DECIMAL(38, 10))``: Flink trims only ' ', '\\n' and '\\t',
  parses Java ``BigDecimal`` syntax (sign, digits -- any Unicode decimal digit --, one '.',
  exponent), rounds HALF_UP to 10 fraction digits and reads NULL when more than 28 integer digits
  remain. Anything else ('1_000', 'NaN', '0x10', '12L', '') is NULL.
* :func:`utf16_key` orders strings like Java's ``String.compareTo`` (UTF-16 code units), which is
  what Flink uses for ``<``/``>`` on STRING values; Python's code-point order differs only for
  characters above U+FFFF against U+E000..U+FFFF.
"""

from __future__ import annotations

import re
from decimal import MAX_EMAX, MIN_EMIN, ROUND_HALF_UP, Context, Decimal, InvalidOperation

from cdcrouter.ir.nodes import DECIMAL_PRECISION, DECIMAL_SCALE

_DEC_SYNTAX = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
# No exponent, at most 28 integer and 10 fraction digits: rounding and the range check cannot apply,
# and Decimal('2.5') compares and hashes like its quantized 2.5000000000, so it is used as is.
_SIMPLE = re.compile(r"[+-]?\d{1,28}(?:\.\d{0,10})?")
_CTX = Context(prec=DECIMAL_PRECISION + 40, rounding=ROUND_HALF_UP, Emax=MAX_EMAX, Emin=MIN_EMIN)
_QUANTUM = Decimal(1).scaleb(-DECIMAL_SCALE)
_LIMIT = Decimal(10) ** (DECIMAL_PRECISION - DECIMAL_SCALE)
_CACHE: dict[str, Decimal | None] = {}
_CACHE_MAX = 65536
_MISS = object()


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
    if abs(q) >= _LIMIT:
        return None
    return q


def to_decimal(s: str | None) -> Decimal | None:
    """Cached :func:`parse_decimal` that passes NULL through (attribute values repeat a lot)."""
    if s is None:
        return None
    r = _CACHE.get(s, _MISS)
    if r is _MISS:
        r = parse_decimal(s)
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        _CACHE[s] = r
    return r  # type: ignore[return-value]


def utf16_key(s: str) -> bytes:
    """A sort key giving Java's UTF-16 code-unit order."""
    return s.encode("utf-16-be", "surrogatepass")
