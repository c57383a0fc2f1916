"""Diagnostics: positioned, coded messages collected during load and validation.

Codes are stable so CI scripts and tests can rely on them:

    Y...  YAML syntax and document shape (Y001 syntax error, Y002 wrong type, Y003 missing key,
          Y004 unknown key, Y005 duplicate key)
    V...  semantic validation (field paths, operators, values, regexes, topics, ids)
    B...  a back end cannot express a construct
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cdcrouter.errors import CdcrouterError
from cdcrouter.filters.span import Span


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem in a filter file: where, which filter, what is wrong and what to do."""

    code: str
    message: str
    span: Span
    filter_id: str | None = None
    hint: str | None = None

    def render(self) -> str:
        fid = f" [{self.filter_id}]" if self.filter_id else ""
        text = f"{self.span} {self.code}{fid} {self.message}"
        return text + (f"\n    hint: {self.hint}" if self.hint else "")

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.span.file,
            "line": self.span.line,
            "column": self.span.column,
            "code": self.code,
            "filterId": self.filter_id,
            "message": self.message,
            "hint": self.hint,
        }

    def check_tuple(self) -> tuple[str, int, int]:
        """(code, line, column): what tests assert on."""
        return (self.code, self.span.line, self.span.column)


class FilterError(CdcrouterError):
    """A filter file has one or more problems; ``diagnostics`` lists them all, in file order."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.span.file, d.span.line, d.span.column))
        n = len(self.diagnostics)
        first = self.diagnostics[0] if self.diagnostics else None
        summary = f"{n} problem{'s' if n != 1 else ''} in filter file"
        super().__init__(
            summary + ("\n" + "\n".join(d.render() for d in self.diagnostics) if first else ""),
            hint="run `cdcrouter validate` for the full list (add --format json for CI)",
        )


class Collector:
    """Accumulates diagnostics so one run reports every problem, not just the first."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def add(
        self, code: str, message: str, span: Span, filter_id: str | None = None, hint: str | None = None
    ) -> None:
        self.items.append(Diagnostic(code, message, span, filter_id, hint))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise FilterError(self.items)


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The closest candidate to a misspelt word, or None when nothing is close."""
    import difflib

    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if found:
        return found[0]
    lowered = {c.lower(): c for c in choices}
    return lowered.get(word.lower())
