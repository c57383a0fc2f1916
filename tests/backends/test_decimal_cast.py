"""The native ``TRY_CAST(s AS DECIMAL(38, 10))`` (ints scaled by 10^10) against the reference.

``sqlsem.parse_decimal`` is pinned to values measured on Flink (test_python_eval.py); the Rust cast
the embedded engine uses must give exactly that value times 10^10, or None, for any text.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cdcrouter._native import try_cast_decimal
from cdcrouter.backends import sqlsem

from .test_python_eval import ev, one_filter


def reference(s: str) -> int | None:
    d = sqlsem.parse_decimal(s)
    return None if d is None else int(d.scaleb(10, sqlsem._CTX))


digits = st.text("0123456789", max_size=45)
# Ties and near-ties at the 11th fraction digit are the interesting rounding cases.
ties = st.builds(
    lambda i, f, last: f"{i}.{f}{last}",
    st.text("0123456789", min_size=1, max_size=29),
    st.text("0123456789", min_size=10, max_size=10),
    st.sampled_from(["5", "4", "49", "50", "51", "5000000000000000001", "4999999999"]),
)
decimalish = st.builds(
    lambda ws1, sign, ip, dot, fp, exp, ws2: f"{ws1}{sign}{ip}{dot}{fp}{exp}{ws2}",
    st.text(" \n\t\x0b\r", max_size=2),
    st.sampled_from(["", "", "+", "-", "--", "+-"]),
    digits,
    st.sampled_from([".", ".", "", ".."]),
    digits,
    st.one_of(
        st.just(""),
        st.builds(
            lambda e, s, n: f"{e}{s}{n}",
            st.sampled_from("eE"),
            st.sampled_from(["", "+", "-"]),
            st.one_of(st.integers(0, 60).map(str), st.text("0123456789", max_size=20)),
        ),
    ),
    st.text(" \n\t", max_size=2),
)
garbage = st.text(st.characters(codec="utf-8"), max_size=12)
alphabet = st.text("0123456789.eE+- \n\tx_１٣", max_size=25)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(decimalish, ties, garbage, alphabet))
@example("9999999999999999999999999999.99999999994")
@example("9999999999999999999999999999.99999999995")
@example("-9999999999999999999999999999.99999999995")
@example("0.99999999995e28")
@example("0.0000000000500000000000000000000000000000000000001e1")
@example("000000000000000000000000000000000000000000000000001.5")
@example("1" + "0" * 60 + "e-55")
@example("１２.5")
@example("\ud800")
def test_native_cast_equals_reference(s: str) -> None:
    assert try_cast_decimal(s) == reference(s), repr(s)


def test_boundary_is_28_integer_digits_after_rounding() -> None:
    nines = "9" * 28
    assert try_cast_decimal(nines) == int(nines) * 10**10
    assert try_cast_decimal("-" + nines + ".9999999999") == -(10**38 - 1)
    assert try_cast_decimal(nines + ".99999999995") is None  # rounds up to 10^28
    assert try_cast_decimal(nines + ".99999999994") == 10**38 - 1
    assert try_cast_decimal("1" + "0" * 28) is None
    assert try_cast_decimal("1e27") == 10**37 and try_cast_decimal("1e28") is None
    assert try_cast_decimal("0.1e29") is None and try_cast_decimal("0.1e28") == 10**37


def test_none_passes_through_and_non_ascii_falls_back_to_python() -> None:
    assert try_cast_decimal(None) is None
    assert try_cast_decimal("１２") == 12 * 10**10  # a Unicode digit, as Java's BigDecimal reads it
    assert try_cast_decimal("\u00a012") is None  # NBSP is not trimmed
    assert try_cast_decimal("1e" + "9" * 20) is None  # exponent too long for the native path
    assert try_cast_decimal("1e-" + "9" * 20) is None  # Java too: the exponent must fit an int


def test_scale_decimal_is_exact_and_refuses_extra_digits() -> None:
    assert sqlsem.scale_decimal(Decimal("-3.5")) == -35_000_000_000
    assert sqlsem.scale_decimal(Decimal("1E+3")) == 10**13
    assert sqlsem.scale_decimal(7) == 7 * 10**10
    with pytest.raises(ValueError):
        sqlsem.scale_decimal(Decimal("0.00000000001"))


def test_long_fields_compare_exactly_with_fractional_literals() -> None:
    """A BIGINT field against whole literals stays an int; a fractional literal scales it."""

    def f(cond: str) -> Any:
        return one_filter(f"      - {cond}\n")

    gt = f("{field: eventHeader.savedDate, operator: greaterThan, value: 10.5}")
    assert gt.match(ev(savedDate=11)) == ["f"] and gt.match(ev(savedDate=10)) == []
    ge = f("{field: eventHeader.savedDate, operator: greaterThanOrEqual, value: 10}")
    assert ge.match(ev(savedDate=10)) == ["f"] and ge.match(ev(savedDate=9)) == []
    btw = f("{field: sourceMetadata.timestamp, operator: between, min: 1.5, max: 3}")
    e = ev()
    for ts, want in ((None, None), (1, False), (2, True), (3, True), (4, False)):
        e["sourceMetadata"]["timestamp"] = ts
        assert btw.predicates["f"](e) is want, ts
    eq = f("{field: eventHeader.savedDate, operator: equals, value: 5.0000000001}")
    assert eq.match(ev(savedDate=5)) == []


def test_decimal_literals_in_lists_and_between_are_scaled() -> None:
    amount = "'eventBody.entities[0].updatedAttributes.amount'"
    c = one_filter(f"      - {{field: {amount}, operator: in, values: [1.5, 2, -0.0000000001]}}\n")
    cases = (("1.50", True), ("2e0", True), ("-1e-10", True), ("1.4", False), ("2.00000000001", True))
    for text, hit in cases:
        assert (c.match(ev(attrs={"amount": text})) == ["f"]) is hit, text
    b = one_filter(f"      - {{field: {amount}, operator: between, min: 0.1, max: 0.2}}\n")
    assert b.match(ev(attrs={"amount": "0.099999999995"})) == ["f"]  # rounds HALF_UP to 0.1
    assert b.match(ev(attrs={"amount": "0.20000000005"})) == []
