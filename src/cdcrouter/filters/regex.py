"""The portable regex dialect: patterns that Java (Flink's REGEXP) and Python read the same way.

A ``matches`` pattern is parsed here and re-emitted twice, once for Java and once for Python.
Constructs whose meaning differs between the engines are translated or rejected:

translated
    ``.``   Java excludes the line terminators \\n \\r \\u0085 \\u2028 \\u2029; Python only \\n.
            Python gets the explicit class ``[^\\n\\r\\x85\\u2028\\u2029]``.
    ``$``   Java also matches before a final line terminator; we make ``$`` mean end of text in
            both (Java ``\\z``, Python ``\\Z``).
    ``\\d \\w \\s``  ASCII in Java; Python compiles with ``re.ASCII`` so they agree.
rejected (with the position and a fix)
    word boundaries ``\\b \\B`` (Unicode in Java 17, ASCII in Python), back-references, named
    groups, lookbehind, possessive quantifiers, inline flags other than a leading ``(?i)``,
    ``\\p{..}``, ``\\Q..\\E``, ``\\h \\v \\R \\X \\A \\z \\Z \\G``, octal, ``\\x{..}``, nested classes and
    ``&&`` in classes, unescaped ``{ } ]`` outside their syntax, empty patterns.
Matching is a search (Java ``Matcher.find()``): anchor with ``^``/``$`` for a whole-value match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_REPEAT = 1000
_PY_DOT = "[^\\n\\r\\x85\\u2028\\u2029]"
_CLASS_ESCAPES = set("dDwWsS")
_SPECIAL_OUT = set("\\^$.|?*+()[]{}")
_SPECIAL_IN = set("\\]^-[&")
_CTRL_ESCAPES = {"t": "\\t", "n": "\\n", "r": "\\r", "f": "\\f"}


class RegexError(Exception):
    """A pattern outside the portable dialect; ``offset`` is the 0-based character position."""

    def __init__(self, message: str, offset: int, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.hint = hint


@dataclass(frozen=True)
class PortableRegex:
    pattern: str
    java: str
    python: str


_REJECT_ESCAPES = {
    "b": "word boundaries differ between Java and Python; use (?:^|[^A-Za-z0-9_]) or a class",
    "B": "word boundaries differ between Java and Python",
    "A": "use ^ for the start of the text",
    "z": "use $ (it means end of text here)",
    "Z": "use $ (it means end of text here)",
    "G": "\\G is Java-only",
    "Q": "escape each special character with a backslash instead of \\Q...\\E",
    "E": "escape each special character with a backslash instead of \\Q...\\E",
    "p": "Unicode property classes differ; spell the class out, e.g. [A-Za-z]",
    "P": "Unicode property classes differ; spell the class out, e.g. [^A-Za-z]",
    "h": "\\h is Java-only; use [ \\t]",
    "H": "\\H is Java-only",
    "v": "\\v means different things in Java and Python; use \\x0B or [\\n\\x0B\\f\\r]",
    "V": "\\V is Java-only",
    "R": "\\R is Java-only; use (?:\\r\\n|[\\n\\r])",
    "X": "\\X is Java-only",
    "k": "named back-references are not portable",
    "N": "\\N is not portable",
    "a": "\\a differs; use \\x07",
    "e": "\\e differs; use \\x1B",
    "c": "control escapes differ; use \\xhh",
}


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.java: list[str] = []
        self.py: list[str] = []
        self.depth = 0

    def err(self, msg: str, at: int | None = None, hint: str | None = None) -> RegexError:
        return RegexError(msg, self.i if at is None else at, hint)

    def emit(self, java: str, py: str | None = None) -> None:
        self.java.append(java)
        self.py.append(java if py is None else py)

    def run(self) -> PortableRegex:
        p = self.p
        if not p:
            raise self.err("empty regex (it would match every value)", 0, "write a pattern, e.g. ^LOAN-")
        if p.startswith("(?i)"):
            self.emit("(?i)")
            self.i = 4
        can_repeat = False
        while self.i < len(p):
            c = p[self.i]
            start = self.i
            if c == "\\":
                self.escape(in_class=False)
                can_repeat = True
            elif c == "[":
                self.char_class()
                can_repeat = True
            elif c == "(":
                self.group_open()
                can_repeat = False
            elif c == ")":
                if self.depth == 0:
                    raise self.err("unbalanced ')'", hint="escape it as \\) or add the matching '('")
                self.depth -= 1
                self.emit(")")
                self.i += 1
                can_repeat = True
            elif c == "|":
                self.emit("|")
                self.i += 1
                can_repeat = False
            elif c in "*+?{":
                if not can_repeat:
                    raise self.err(f"'{c}' has nothing to repeat", hint=f"escape it as \\{c}")
                self.quantifier()
                can_repeat = False
            elif c == ".":
                self.emit(".", _PY_DOT)
                self.i += 1
                can_repeat = True
            elif c == "^":
                self.emit("^")
                self.i += 1
                can_repeat = False
            elif c == "$":
                self.emit("\\z", "\\Z")
                self.i += 1
                can_repeat = False
            elif c in "}]":
                raise self.err(f"unescaped '{c}'", hint=f"escape it as \\{c}")
            else:
                self.literal(c)
                self.i += 1
                can_repeat = True
            assert self.i > start
        if self.depth:
            raise self.err("missing ')'", len(p), "close every '(' group")
        java, py = "".join(self.java), "".join(self.py)
        try:
            re.compile(py, re.ASCII)
        except re.error as exc:  # pragma: no cover - the parser should have caught it
            raise self.err(f"regex does not compile: {exc.msg}", exc.pos or 0) from exc
        return PortableRegex(p, java, py)

    def literal(self, c: str, in_class: bool = False) -> None:
        if 0xD800 <= ord(c) <= 0xDFFF:
            raise self.err("lone surrogate character in regex")
        special = _SPECIAL_IN if in_class else _SPECIAL_OUT
        self.emit("\\" + c if c in special else c)

    def escape(self, in_class: bool) -> str | None:
        """Consume an escape; return the literal char it stands for (None for a class escape)."""
        p = self.p
        if self.i + 1 >= len(p):
            raise self.err("trailing backslash", hint="escape a backslash as \\\\")
        e = p[self.i + 1]
        if e in _CLASS_ESCAPES:
            self.emit("\\" + e)
            self.i += 2
            return None
        if e in _CTRL_ESCAPES:
            self.emit(_CTRL_ESCAPES[e])
            self.i += 2
            return {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}[e]
        if e == "x":
            m = re.compile(r"[0-9A-Fa-f]{2}").match(p, self.i + 2)
            if not m:
                raise self.err(
                    "\\x needs exactly two hex digits", hint="write \\x41; \\x{...} is not portable"
                )
            self.emit("\\x" + m.group(0))
            self.i += 4
            return chr(int(m.group(0), 16))
        if e == "u":
            m = re.compile(r"[0-9A-Fa-f]{4}").match(p, self.i + 2)
            if not m:
                raise self.err("\\u needs exactly four hex digits", hint="write \\u00e9")
            cp = int(m.group(0), 16)
            if 0xD800 <= cp <= 0xDFFF:
                raise self.err("surrogate code points are not portable", hint="write the character itself")
            self.emit("\\u" + m.group(0))
            self.i += 6
            return chr(cp)
        if e.isdigit():
            raise self.err(
                f"\\{e}: back-references and octal escapes are not portable",
                hint="use \\xhh for a character code",
            )
        if e in _REJECT_ESCAPES:
            raise self.err(f"\\{e} is not portable between Java and Python", hint=_REJECT_ESCAPES[e])
        if e.isalnum() or ord(e) > 127:
            raise self.err(
                f"unknown escape \\{e}", hint="escape only punctuation; write letters as themselves"
            )
        self.emit("\\" + e)
        self.i += 2
        return e

    def group_open(self) -> None:
        p = self.p
        self.depth += 1
        if p.startswith("(?", self.i):
            for opener in ("(?:", "(?=", "(?!"):
                if p.startswith(opener, self.i):
                    self.emit(opener)
                    self.i += 3
                    return
            if p.startswith("(?<=", self.i) or p.startswith("(?<!", self.i):
                raise self.err("lookbehind is not portable", hint="restructure with a lookahead or a class")
            if p.startswith("(?<", self.i) or p.startswith("(?P", self.i):
                raise self.err("named groups are not portable", hint="use (?:...) or (...)")
            raise self.err(
                "inline flags and special groups are not portable (only a leading (?i) is)",
                hint="put (?i) at the very start, or spell the cases out with classes",
            )
        self.emit("(")
        self.i += 1

    def quantifier(self) -> None:
        p = self.p
        c = p[self.i]
        if c == "{":
            m = re.compile(r"\{(\d+)(,(\d*))?\}").match(p, self.i)
            if not m:
                raise self.err(
                    "'{' must start a repetition {n}, {n,} or {n,m}",
                    hint="escape a literal brace as \\{",
                )
            lo = int(m.group(1))
            hi = m.group(3)
            if lo > MAX_REPEAT or (hi and int(hi) > MAX_REPEAT):
                raise self.err(f"repetition counts above {MAX_REPEAT} are not allowed")
            if hi and int(hi) < lo:
                raise self.err(f"repetition {m.group(0)} has min > max", hint="swap the numbers")
            self.emit(m.group(0))
            self.i = m.end()
        else:
            self.emit(c)
            self.i += 1
        if self.i < len(p) and p[self.i] == "?":
            self.emit("?")
            self.i += 1
        if self.i < len(p) and p[self.i] == "+":
            raise self.err("possessive quantifiers are not portable", hint="drop the trailing '+'")
        if self.i < len(p) and (p[self.i] in "*+?" or re.compile(r"\{\d").match(p, self.i)):
            raise self.err("a quantifier cannot follow a quantifier", hint="group the part first: (?:a+)*")

    def char_class(self) -> None:
        p = self.p
        start = self.i
        self.emit("[")
        self.i += 1
        if self.i < len(p) and p[self.i] == "^":
            self.emit("^")
            self.i += 1
        first = True
        prev_char: str | None = None  # the last single character, a possible range start
        while True:
            if self.i >= len(p):
                raise self.err("missing ']'", start, "close the character class")
            c = p[self.i]
            if c == "]":
                if first:
                    raise self.err("empty character class or ']' first in a class", hint="escape it as \\]")
                self.emit("]")
                self.i += 1
                return
            if c == "[":
                raise self.err("nested character classes are not portable", hint="escape it as \\[")
            if c == "&" and p.startswith("&&", self.i):
                raise self.err(
                    "class intersection && is Java-only", hint="escape as \\&\\& or list the chars"
                )
            if c == "-" and not first and self.i + 1 < len(p) and p[self.i + 1] != "]":
                if prev_char is None:
                    raise self.err(
                        "a range must run between two single characters",
                        hint="escape a literal '-' as \\-",
                    )
                self.i += 1
                if p[self.i] == "\\":
                    end = self.escape(in_class=True)
                    if end is None:
                        raise self.err("a range cannot end in a class escape", hint="escape '-' as \\-")
                    self.java.insert(len(self.java) - 1, "-")
                    self.py.insert(len(self.py) - 1, "-")
                else:
                    end = p[self.i]
                    if end in "[]":
                        raise self.err("bad range end", hint="escape '-' as \\-")
                    self.emit("-")
                    self.literal(end, in_class=True)
                    self.i += 1
                if ord(end) < ord(prev_char):
                    raise self.err(f"range {prev_char}-{end} is out of order", hint="swap the ends")
                prev_char = None
                first = False
                continue
            if c == "\\":
                prev_char = self.escape(in_class=True)
            else:
                self.literal(c, in_class=True)
                prev_char = c
                self.i += 1
            first = False


def check_regex(pattern: str) -> PortableRegex:
    """Parse ``pattern`` in the portable dialect; raise :class:`RegexError` if it is outside it."""
    return _Parser(pattern).run()
