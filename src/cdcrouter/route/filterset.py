"""The routing view of a filters.yaml: which filter writes to which topic, and a compiled matcher.

The compiler (``cdcrouter.filters`` + ``cdcrouter.backends.python_eval``) does the real work; this
module only keeps what the engine needs, so a reload swaps one immutable object.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CompiledFilters", "RouteSpec", "compile_filters_file", "compile_filters_text"]


@dataclass(frozen=True)
class RouteSpec:
    filter_id: str
    consumer_id: str
    topic: str


@dataclass(frozen=True)
class CompiledFilters:
    """An enabled-filters routing table plus ``match(event) -> [filter ids]``."""

    routes: dict[str, RouteSpec]
    match: Callable[[dict[str, Any]], list[str]]
    source: str = "<text>"
    stamp: tuple[int, int] | None = field(default=None, compare=False)  # (mtime_ns, size) when loaded

    @property
    def topics(self) -> list[str]:
        return sorted({r.topic for r in self.routes.values()})


def _build(filterset: Any, source: str, stamp: tuple[int, int] | None) -> CompiledFilters:
    from cdcrouter.backends.python_eval import compile_filterset

    compiled = compile_filterset(filterset)
    routes = {
        f.id: RouteSpec(f.id, f.consumer_id, f.output_topic)
        for f in filterset.filters
        if getattr(f, "enabled", True)
    }
    return CompiledFilters(routes=routes, match=compiled.match, source=source, stamp=stamp)


def file_stamp(path: str | Path) -> tuple[int, int] | None:
    """``(mtime_ns, size)`` of a file, or None if it is missing (what reload watches)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def compile_filters_file(path: str | Path) -> CompiledFilters:
    """Load, validate and compile a filters file; raises the compiler's CdcrouterError on mistakes."""
    from cdcrouter.filters import load_filters

    stamp = file_stamp(path)
    return _build(load_filters(path), str(path), stamp)


def compile_filters_text(text: str, source: str = "<text>") -> CompiledFilters:
    from cdcrouter.filters import load_filters_text

    return _build(load_filters_text(text, source), source, None)
