"""The portable regex dialect: what is translated, what is rejected (with the position)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdcrouter.filters.regex import RegexError, check_regex


@pytest.mark.parametrize(
    ("pattern", "java", "python"),
    [
        ("^LOAN-\\d+$", "^LOAN-\\d+\\z", "^LOAN-\\d+\\Z"),
        ("a.b", "a.b", "a[^\\n\\r\\x85\\u2028\\u2029]b"),
        ("(?i)car", "(?i)car", "(?i)car"),
        ("[a-z0-9_-]+", "[a-z0-9_\\-]+", "[a-z0-9_\\-]+"),
        ("x{2,3}?", "x{2,3}?", "x{2,3}?"),
        ("(?:a|b)(?=c)(?!d)", "(?:a|b)(?=c)(?!d)", "(?:a|b)(?=c)(?!d)"),
        ("\\x41\\u00e9\\t", "\\x41\\u00e9\\t", "\\x41\\u00e9\\t"),
    ],
)
def test_translations(pattern: str, java: str, python: str) -> None:
    r = check_regex(pattern)
    assert (r.java, r.python) == (java, python)


@pytest.mark.parametrize(
    ("pattern", "offset", "words"),
    [
        ("", 0, "empty regex"),
        ("a\\b", 1, "\\b is not portable"),
        ("(a)\\1", 3, "back-references"),
        ("(?<=a)b", 0, "lookbehind"),
        ("(?P<n>a)", 0, "named groups"),
        ("a(?i)b", 1, "inline flags"),
        ("a*+", 2, "possessive"),
        ("a**", 2, "cannot follow a quantifier"),
        ("{2}", 0, "nothing to repeat"),
        ("a{", 1, "repetition"),
        ("a{,3}", 1, "repetition"),
        ("a}", 1, "unescaped '}'"),
        ("[a[b]]", 2, "nested character classes"),
        ("[a&&b]", 2, "intersection"),
        ("[]a]", 1, "empty character class"),
        ("[z-a]", 4, "out of order"),
        ("[\\w-z]", 3, "range"),
        ("\\p{L}", 0, "\\p is not portable"),
        ("\\Qa\\E", 0, "\\Q is not portable"),
        ("\\v", 0, "\\v is not portable"),
        ("a)", 1, "unbalanced"),
        ("(a", 2, "missing ')'"),
        ("[abc", 0, "missing ']'"),
        ("a{1001}", 1, "above 1000"),
    ],
)
def test_rejections_name_the_position(pattern: str, offset: int, words: str) -> None:
    with pytest.raises(RegexError) as err:
        check_regex(pattern)
    assert err.value.offset == offset and words in err.value.message


SAFE = st.text(alphabet="abcXYZ019 -_.", max_size=6)


@given(literal=SAFE, subject=st.text(alphabet="abcXYZ019 -_.\n\r\u0085", max_size=12))
def test_escaped_literals_match_like_plain_substring_search(literal: str, subject: str) -> None:
    if not literal:
        return
    r = check_regex(re.escape(literal).replace("\\ ", " "))
    assert (re.search(r.python, subject, re.ASCII) is not None) == (literal in subject)
