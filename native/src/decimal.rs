//! `TRY_CAST(s AS DECIMAL(38, 10))` as an int scaled by 10^10, for the embedded filter engine.
//!
//! Same rules as `cdcrouter.backends.sqlsem.parse_decimal` (which pins Flink's measured results):
//! trim ' ', '\n', '\t'; Java BigDecimal syntax `[+-]?(digits[.digits*] | .digits)([eE][+-]?digits)?`;
//! round HALF_UP to 10 fraction digits; NULL when |value| >= 10^28 after rounding. The value
//! times 10^10 is then an exact integer below 10^38, which fits an i128.
//!
//! Only ASCII text is parsed here. Anything else (Java accepts every Unicode decimal digit, and
//! Python's `str.strip`/`\d` follow Unicode too) and exponents too long for exact i64 arithmetic
//! go to the Python implementation, `sqlsem.parse_scaled`, so this function is never wrong,
//! only sometimes not faster.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;

/// 10^38: the scaled bound (10^28 integer part times 10^10).
const LIMIT: i128 = 100_000_000_000_000_000_000_000_000_000_000_000_000;
/// The scale of DECIMAL(38, 10).
const SCALE: i64 = 10;
/// Exponents with more significant digits than this go to Python (keeps i64 arithmetic exact).
const MAX_EXP_DIGITS: usize = 15;

/// What the ASCII parser concluded.
#[derive(Debug, PartialEq, Eq)]
pub enum Cast {
    /// A value, scaled by 10^10.
    Value(i128),
    /// SQL NULL: bad syntax or out of range.
    Null,
    /// Not decidable here (non-ASCII text, huge exponent): ask Python.
    Fallback,
}

static FALLBACK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `TRY_CAST(s AS DECIMAL(38, 10)) * 10^10` as an int, or None; None passes through.
#[pyfunction]
pub fn try_cast_decimal<'py>(s: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = s.py();
    if s.is_none() {
        return Ok(s.clone());
    }
    let result = match s.cast::<PyString>() {
        Ok(text) => match text.to_str() {
            Ok(t) => parse_scaled(t.as_bytes()),
            Err(_) => Cast::Fallback, // lone surrogates: Python decides
        },
        Err(_) => Cast::Fallback, // not a str: Python raises what it raises
    };
    match result {
        Cast::Value(v) => match i64::try_from(v) {
            Ok(small) => Ok(small.into_pyobject(py)?.into_any()),
            Err(_) => Ok(v.into_pyobject(py)?.into_any()),
        },
        Cast::Null => Ok(py.None().into_bound(py)),
        Cast::Fallback => FALLBACK
            .import(py, "cdcrouter.backends.sqlsem", "parse_scaled")?
            .call1((s,)),
    }
}

#[inline]
fn digits_end(b: &[u8], from: usize) -> usize {
    b[from..].iter().position(|c| !c.is_ascii_digit()).map_or(b.len(), |n| from + n)
}

/// The scaled value of ASCII decimal text (see the module docs); `Fallback` for non-ASCII.
pub fn parse_scaled(text: &[u8]) -> Cast {
    if !text.is_ascii() {
        return Cast::Fallback;
    }
    let blank = |c: &u8| matches!(c, b' ' | b'\n' | b'\t');
    let start = text.iter().position(|c| !blank(c)).unwrap_or(text.len());
    let end = text.iter().rposition(|c| !blank(c)).map_or(start, |n| n + 1);
    let b = &text[start..end];

    let mut i = 0;
    let negative = match b.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let int_start = i;
    let int_end = digits_end(b, int_start);
    let (frac_start, frac_end) = if b.get(int_end) == Some(&b'.') {
        (int_end + 1, digits_end(b, int_end + 1))
    } else {
        (int_end, int_end)
    };
    if int_end == int_start && frac_end == frac_start {
        return Cast::Null; // no digit in the mantissa ('', '.', 'e3', '+')
    }
    i = frac_end;
    let mut exp: i64 = 0;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        let exp_negative = match b.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let exp_end = digits_end(b, i);
        if exp_end == i {
            return Cast::Null; // '12e', '1e+'
        }
        let significant = &b[i..exp_end];
        let significant = &significant[significant.iter().take_while(|&&c| c == b'0').count()..];
        if significant.len() > MAX_EXP_DIGITS {
            return Cast::Fallback;
        }
        exp = significant.iter().fold(0, |acc, &c| acc * 10 + i64::from(c - b'0'));
        if exp_negative {
            exp = -exp;
        }
        i = exp_end;
    }
    if i != b.len() {
        return Cast::Null; // trailing text: '12L', '1.2.3', '1_0'
    }

    // value = D * 10^(exp - frac_len) with D all mantissa digits; scaled = D * 10^k.
    let int_digits = &b[int_start..int_end];
    let frac_digits = &b[frac_start..frac_end];
    let digit = |n: usize| -> u8 {
        if n < int_digits.len() {
            int_digits[n] - b'0'
        } else {
            frac_digits[n - int_digits.len()] - b'0'
        }
    };
    let total = int_digits.len() + frac_digits.len();
    let Ok(frac_len) = i64::try_from(frac_digits.len()) else {
        return Cast::Fallback;
    };
    let k = exp - frac_len + SCALE;
    let first = (0..total).find(|&n| digit(n) != 0).unwrap_or(total); // skip leading zeros
    // Digits of D kept (the rest are dropped by rounding to scale 10) and the first dropped one.
    let (keep_end, round_digit, shift) = if k >= 0 {
        (total, 0, k)
    } else {
        let dropped = usize::try_from(-k).unwrap_or(usize::MAX);
        match total.checked_sub(dropped) {
            Some(keep_end) => (keep_end, if dropped > 0 { digit(keep_end) } else { 0 }, 0),
            None => (0, 0, 0), // all digits are below the last kept place, with a zero above them
        }
    };
    let significant = keep_end.saturating_sub(first);
    let Ok(significant_i64) = i64::try_from(significant) else {
        return Cast::Null;
    };
    if significant > 0 && significant_i64 + shift > 38 {
        return Cast::Null; // at least 10^38 before rounding
    }
    let mut v: i128 = 0;
    for n in first..keep_end.max(first) {
        v = v * 10 + i128::from(digit(n));
    }
    if significant > 0 {
        for _ in 0..shift {
            v *= 10; // significant + shift <= 38 digits: below 10^38, no overflow
        }
    }
    if round_digit >= 5 {
        v += 1; // HALF_UP: away from zero on a tie
    }
    if v >= LIMIT {
        return Cast::Null;
    }
    Cast::Value(if negative { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::{parse_scaled, Cast};

    fn p(s: &str) -> Cast {
        parse_scaled(s.as_bytes())
    }

    #[test]
    fn values_and_rounding() {
        assert_eq!(p("1.00000000005"), Cast::Value(10_000_000_001));
        assert_eq!(p("1.000000000049"), Cast::Value(10_000_000_000));
        assert_eq!(p("-1.00000000005"), Cast::Value(-10_000_000_001));
        assert_eq!(p("\t12\n"), Cast::Value(120_000_000_000));
        assert_eq!(p("1E+3"), Cast::Value(10_000_000_000_000));
        assert_eq!(p(".5"), Cast::Value(5_000_000_000));
        assert_eq!(p("5."), Cast::Value(50_000_000_000));
        assert_eq!(p("1e-11"), Cast::Value(0));
        assert_eq!(p("5e-11"), Cast::Value(1));
        assert_eq!(p("0.00000000005e0"), Cast::Value(1));
        assert_eq!(p("0012"), Cast::Value(120_000_000_000));
        assert_eq!(p("-0"), Cast::Value(0));
    }

    #[test]
    fn range_and_syntax() {
        let max = "9999999999999999999999999999.9999999999";
        assert_eq!(p(max), Cast::Value(99_999_999_999_999_999_999_999_999_999_999_999_999));
        assert_eq!(p("9999999999999999999999999999.99999999995"), Cast::Null);
        assert_eq!(p("1e28"), Cast::Null);
        assert_eq!(p("1e999999999999999"), Cast::Null);
        assert_eq!(p("1e-999999999999999"), Cast::Value(0));
        assert_eq!(p("1e9999999999999999"), Cast::Fallback);
        assert_eq!(p("１２"), Cast::Fallback);
        for bad in ["", " ", ".", "+", "e3", "12e", "1e+", "1.2.3", "12L", "1_0", "NaN", "\x0b12", "- 1"] {
            assert_eq!(p(bad), Cast::Null, "{bad:?}");
        }
    }
}
