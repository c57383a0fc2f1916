"""Benchmark results as text: one line per figure for a terminal, a markdown table for a report.

A result is what :func:`cdcrouter.bench.stats.repeat` returns: settings as plain values, measured
figures as ``{"median", "min", "max"}`` (or one value when every run measured it alike), nested
per engine or phase, the single runs under ``each_run``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# the keys that hold a measurement (a rate, a time, a size, a ratio), not a setting
_FIGURE = re.compile(r"(per_s\w*|_ms|_s|_mb|ratio\w*|per_change|per_event|load_1m)$")


def fmt(value: Any) -> str:
    """``{"median": 5, "min": 4, "max": 7}`` -> ``5 (4-7)``; numbers with thousands separators."""
    if isinstance(value, dict) and set(value) == {"median", "min", "max"}:
        return f"{_num(value['median'])} ({_num(value['min'])}-{_num(value['max'])})"
    return _num(value)


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or (value == int(value) and abs(value) >= 100):
        return f"{int(value):,}"
    return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.1f}"


def human(result: dict[str, Any]) -> str:
    """``key: value`` lines, nested keys dotted, the single runs left out (see ``--json``)."""
    return "\n".join(f"{key}: {fmt(value)}" for key, value in _leaves(result))


def _leaves(result: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in result.items():
        if key in ("each_run", "rows"):  # the single runs (bench flink: "rows", its medians: "summary")
            continue
        if isinstance(value, dict) and set(value) != {"median", "min", "max"}:
            yield from _leaves(value, f"{prefix}{key}.")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, row in enumerate(value):  # one per engine, delivery, shape (bench flink's summary)
                yield from _leaves(row, f"{prefix}{key}[{_row_label(row, i)}].")
        else:
            yield f"{prefix}{key}", value


def _row_label(row: dict[str, Any], index: int) -> str:
    """``flink exactly-once one-sink`` for a row that names its engine; else its index."""
    parts = [str(row[k]) for k in ("engine", "delivery", "sink_shape") if isinstance(row.get(k), str)]
    return " ".join(parts) or str(index)


def figures(result: dict[str, Any]) -> list[tuple[str, Any]]:
    """The measured figures of a result (rates, times, sizes, ratios, load), dotted keys."""
    return [
        (key, value)
        for key, value in _leaves(result)
        if _FIGURE.search(key) and (isinstance(value, dict) or _is_number(value))
    ]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def markdown(results: dict[str, Any]) -> str:
    """One table over named results (a name maps to a result or a list of them)."""
    lines = [
        "| result | figure | median | min | max | runs |",
        "|---|---|---|---|---|---|",
    ]
    for name, value in results.items():
        for i, result in enumerate(value if isinstance(value, list) else [value]):
            label = name if not isinstance(value, list) or len(value) == 1 else f"{name} [{i + 1}]"
            runs = result.get("runs", 1)
            for key, fig in figures(result):
                if isinstance(fig, dict):
                    cells = [_num(fig["median"]), _num(fig["min"]), _num(fig["max"])]
                else:
                    cells = [_num(fig)] * 3
                lines.append(f"| {label} | {key} | {' | '.join(cells)} | {runs} |")
    return "\n".join(lines)


def load_dir(directory: Path) -> dict[str, Any]:
    """Every ``*.json`` result in ``directory``, by file name, in name order."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}
