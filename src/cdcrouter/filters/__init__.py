"""The filter language front end: YAML with positions -> checked, typed IR.

Public API::

    load_filters(path) -> FilterSet                 # raises FilterError(.diagnostics)
    load_filters_text(text, file="<string>") -> FilterSet
    validate_file(path) -> list[Diagnostic]         # [] when valid
    validate_text(text, file="<string>") -> list[Diagnostic]
"""

from __future__ import annotations

from pathlib import Path

from cdcrouter.filters.diagnostics import Collector, Diagnostic, FilterError
from cdcrouter.filters.loader import parse_raw
from cdcrouter.filters.resolve import resolve
from cdcrouter.filters.span import Span
from cdcrouter.ir.nodes import FilterSet

__all__ = [
    "Diagnostic",
    "FilterError",
    "Span",
    "load_filters",
    "load_filters_text",
    "validate_file",
    "validate_text",
]


def _compile(text: str, file: str) -> tuple[FilterSet, list[Diagnostic]]:
    diags = Collector()
    raw = parse_raw(text, file, diags)
    fs = resolve(raw, text, diags)
    return fs, sorted(diags.items, key=lambda d: (d.span.line, d.span.column, d.code))


def _read(path: str | Path) -> tuple[str | None, Diagnostic | None]:
    p = Path(path)
    try:
        return p.read_text("utf-8"), None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return None, Diagnostic(
            "Y000", f"cannot read filter file: {reason}", Span(str(path), 1, 1), hint="check the path"
        )


def load_filters_text(text: str, file: str = "<string>") -> FilterSet:
    """Compile filter YAML text to the IR.

    Raises:
        FilterError: with every diagnostic found (syntax, shape and semantic).
    """
    fs, diags = _compile(text, file)
    if diags:
        raise FilterError(diags)
    return fs


def load_filters(path: str | Path) -> FilterSet:
    """Compile the filter file at ``path`` (messages name it as given)."""
    text, problem = _read(path)
    if problem is not None:
        raise FilterError([problem])
    assert text is not None
    return load_filters_text(text, str(path))


def validate_text(text: str, file: str = "<string>") -> list[Diagnostic]:
    """All diagnostics for ``text``, in file order; empty when valid."""
    return _compile(text, file)[1]


def validate_file(path: str | Path) -> list[Diagnostic]:
    """All diagnostics for the file at ``path``; empty when valid."""
    text, problem = _read(path)
    if problem is not None:
        return [problem]
    assert text is not None
    return validate_text(text, str(path))
