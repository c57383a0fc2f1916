"""The one place every benchmark takes its statistics from: percentiles, repeated runs with their
median and range, the load average beside each run, peak RSS, and the check that a latency run
saw every record it sent.

One definition each, so two figures in BENCHMARKS.md are comparable: a p99 here means the same
thing in every table.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from cdcrouter.errors import CdcrouterError

__all__ = [
    "MissingRecords",
    "load_average",
    "peak_rss_mb",
    "percentile",
    "repeat",
    "require_all",
    "reset_peak_rss",
    "spread",
    "summarize",
    "wait_for_all",
]


def percentile(values: Iterable[float], p: float) -> float | None:
    """The ``p``-th percentile (0-100) of ``values`` by linear interpolation between closest ranks.

    That is numpy's default, Hyndman & Fan's type 7 and ``statistics.quantiles(method="inclusive")``:
    sorted ``x[0..n-1]``, rank ``h = (n - 1) * p / 100``, value ``x[floor h] + (h - floor h) *
    (x[floor h + 1] - x[floor h])``. p0 is the minimum, p100 the maximum, p50 the median. None when
    there are no values (a caller reports "no data", never a made-up zero).
    """
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p}: expected 0..100")
    ordered = sorted(values)
    if not ordered:
        return None
    h = (len(ordered) - 1) * p / 100
    lo = math.floor(h)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (h - lo) * (ordered[hi] - ordered[lo]))


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, minimum and maximum of repeated measurements of one figure."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def load_average() -> float:
    """The 1-minute load average, to print beside every figure measured on a shared machine."""
    return round(os.getloadavg()[0], 2)


def _proc_status(pid: int | None) -> Path:
    return Path(f"/proc/{'self' if pid is None else pid}/status")


def peak_rss_mb(pid: int | None = None) -> float | None:
    """Peak resident memory (``VmHWM``, MiB) of process ``pid`` (default: this one) since it started
    or since :func:`reset_peak_rss`; None when unknown (not Linux, the process is gone).

    Read it before the process exits: the kernel forgets it with the process."""
    try:
        for line in _proc_status(pid).read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        return None
    return None


def reset_peak_rss(pid: int | None = None) -> bool:
    """Restart the peak-RSS count of ``pid`` (default: this process) from its current RSS, so each
    of several runs in one process reports its own peak. False when the kernel refuses."""
    try:
        Path(f"/proc/{'self' if pid is None else pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class MissingRecords(CdcrouterError):
    """A latency run did not see every record it sent: its percentiles would describe a subset."""

    def __init__(self, what: str, missing: int, expected: int, waited_s: float) -> None:
        super().__init__(
            f"{what}: {missing:,} of {expected:,} records were not visible {waited_s:.1f} s after the "
            "last was sent; a latency run accounts for every record, so nothing is reported",
            hint="check the engine's log and `cdcrouter stack status`, then run the benchmark again",
        )
        self.missing = missing
        self.expected = expected


def require_all(what: str, seen: int, expected: int, waited_s: float) -> None:
    """Raise :class:`MissingRecords` unless ``seen`` reached ``expected``."""
    if seen < expected:
        raise MissingRecords(what, expected - seen, expected, waited_s)


def wait_for_all(what: str, seen: Callable[[], int], expected: int, timeout_s: float) -> None:
    """Wait (bounded) until ``seen()`` reaches ``expected``; else :class:`MissingRecords`."""
    started = time.monotonic()
    while seen() < expected and time.monotonic() - started < timeout_s:
        time.sleep(0.02)
    require_all(what, seen(), expected, time.monotonic() - started)


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def repeat(
    run: Callable[[], dict[str, Any]], runs: int = 3, report: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Call ``run`` ``runs`` times; one row with every figure's median and range over the runs.

    Each run's row gains ``load_1m`` (the load average when it started) and, unless the run
    measured its own processes (a ``peak_rss_mb`` of its own), this process's peak RSS during the
    run. The result: the fields every run agreed on as they are (settings); each numeric field that
    varied as ``{"median", "min", "max"}``; ``runs``; and the single runs as ``each_run``.
    """
    if runs < 1:
        raise ValueError(f"runs {runs}: expected at least 1")
    rows = []
    for n in range(runs):
        load = load_average()
        reset_peak_rss()
        row = run()
        row.setdefault("peak_rss_mb", peak_rss_mb())
        row["load_1m"] = load
        rows.append(row)
        if report is not None:
            report(f"run {n + 1}/{runs} done (load {load})")
    return summarize(rows)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows of repeated runs as one: equal fields kept, numeric ones as median and range
    (nested results, such as one per engine, likewise), the single runs under ``each_run``."""
    return {"runs": len(rows), **_merge(rows), "each_run": rows}


def _merge(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in rows[0]:
        values = [r.get(key) for r in rows]
        if all(v == values[0] for v in values) and not isinstance(values[0], dict):
            out[key] = values[0]  # a setting, or a figure every run measured alike
        elif all(_numeric(v) for v in values):
            out[key] = spread(values)  # type: ignore[arg-type]
        elif all(isinstance(v, dict) for v in values):
            out[key] = _merge(values)  # type: ignore[arg-type]
        else:
            out[key] = values
    return out
