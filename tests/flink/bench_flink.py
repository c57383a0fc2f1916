"""Benchmark: PyFlink EXPLAIN latency per generated statement once warm (not a test).

Run: .venv/bin/python -m tests.flink.bench_flink [FILTERS.yaml] [REPEATS]
Prints the cold start, then the median and max EXPLAIN time of each statement of the generated
Apache Flink script (its DDL included), over REPEATS warm runs.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from cdcrouter.backends.flink_check import FlinkChecker, split_statements

from .test_explain import ROOT, rendered_script


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "examples" / "filters.yaml"
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    statements = split_statements(rendered_script(path))
    t0 = time.perf_counter()
    checker = FlinkChecker()
    checker.explain(statements)
    print(f"cold: first EXPLAIN of {path.name} incl. JVM start: {time.perf_counter() - t0:.1f}s")
    per: list[list[float]] = [[] for _ in statements]
    for _ in range(repeats):
        env = checker.stream_env
        checker._fresh_database(env)
        for i, stmt in enumerate(statements):
            t = time.perf_counter()
            checker.explain_one(env, stmt)
            per[i].append(time.perf_counter() - t)
    for stmt, times in zip(statements, per, strict=True):
        head = " ".join(stmt.split())[:60]
        print(f"{statistics.median(times) * 1000:8.1f} ms median {max(times) * 1000:8.1f} ms max  {head}")


if __name__ == "__main__":
    main()
