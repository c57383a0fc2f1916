"""Compiler and embedded-engine benchmarks (``cdcrouter bench generate|match``).

Synthetic filters cycle through every operator, both dialects are generated, and the timings
cover the whole path a user runs: YAML text -> positions -> validation -> IR -> SQL.
"""

from __future__ import annotations

import random
import time
from typing import Any

from cdcrouter.backends.flink_sql import generate_sql
from cdcrouter.backends.python_eval import compile_filterset
from cdcrouter.filters import load_filters_text

_CONDITIONS = [
    ("eventHeader.eventName", "equals", "value: Event{i}"),
    ("eventHeader.eventName", "in", "values: [A{i}, B{i}, C{i}]"),
    ("sourceMetadata.operation", "notIn", "values: [DELETE]"),
    ("eventBody.entities[0].updatedAttributes.amount", "greaterThan", "value: {i}"),
    ("eventBody.entities[0].updatedAttributes.amount", "lessThan", "value: {i}000.5"),
    ("eventHeader.createdDate", "greaterThanOrEqual", "value: 1000"),
    ("sourceMetadata.timestamp", "lessThanOrEqual", "value: 99999999999999"),
    ("eventBody.entities[0].updatedAttributes.score", "between", "min: 1\n        max: {i}"),
    ("eventBody.entities[0].entityId", "matches", "value: '^E-{i}[0-9]*$'"),
    ("eventHeader.eventType", "isNull", ""),
    ("eventBody.entities[*].entityType", "isNotNull", ""),
]


def synthetic_filters(n: int) -> str:
    """A valid filters.yaml with ``n`` filters, each with 3 conditions covering all operators."""
    lines = ["filters:"]
    for i in range(n):
        lines += [
            f"  - id: f{i}",
            f"    consumerId: consumer-{i % 50}",
            f"    outputTopic: filtered-topic-{i}",
            f"    conditionLogic: {'AND' if i % 3 else 'OR'}",
            "    conditions:",
        ]
        for k in range(3):
            field, op, rest = _CONDITIONS[(i + k * 4) % len(_CONDITIONS)]
            lines += [f"      - field: {field}", f"        operator: {op}"]
            if rest:
                lines.append("        " + rest.format(i=i))
    return "\n".join(lines) + "\n"


def bench_generate(n: int = 1000, repeat: int = 5) -> dict[str, Any]:
    """Seconds to compile ``n`` filters from YAML text to Flink SQL: median and range of ``repeat``."""
    from cdcrouter.bench.stats import repeat as repeated

    text = synthetic_filters(n)
    return repeated(lambda: _generate_once(n, text), repeat)


def _generate_once(n: int, text: str) -> dict[str, Any]:
    w0, c0 = time.perf_counter(), time.process_time()
    fs = load_filters_text(text, "bench.yaml")
    c1 = time.process_time()
    size = len(generate_sql(fs, "flink"))
    return {
        "filters": n,
        "yaml_lines": text.count("\n"),
        "what": "YAML text -> validated IR -> Flink SQL script (one target)",
        "wall_s": round(time.perf_counter() - w0, 3),
        "cpu_s": round(time.process_time() - c0, 3),
        "cpu_load_and_validate_s": round(c1 - c0, 3),
        "sql_bytes": size,
    }


def synthetic_events(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events = []
    for j in range(n):
        i = rng.randrange(40)
        events.append(
            {
                "eventHeader": {
                    "uuid": f"u{j}",
                    "eventName": rng.choice([f"Event{i}", f"A{i}", "LoanCreated"]),
                    "createdDate": 1_700_000_000_000 + j,
                    "savedDate": 1_700_000_000_000 + j,
                    "eventType": rng.choice([None, "outbox"]),
                },
                "eventBody": {
                    "entities": [
                        {
                            "entityType": rng.choice(["Loan", "Car"]),
                            "entityId": f"E-{i}{j % 97}",
                            "updatedAttributes": {"amount": str(rng.randrange(100000)), "score": str(i)},
                        }
                    ]
                },
                "sourceMetadata": {
                    "table": "loans",
                    "operation": rng.choice(["INSERT", "UPDATE"]),
                    "timestamp": j,
                },
            }
        )
    return events


def bench_match(n_filters: int = 20, n_events: int = 200_000) -> dict[str, Any]:
    """Events per second through ``compile_filterset(...).match`` on one core."""
    compiled = compile_filterset(load_filters_text(synthetic_filters(n_filters), "bench.yaml"))
    events = synthetic_events(min(n_events, 20_000))
    match = compiled.match
    for ev in events[:1000]:  # warm the decimal cache and code paths
        match(ev)
    done = 0
    matched = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while done < n_events:
        for ev in events:
            matched += len(match(ev))
        done += len(events)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "filters": n_filters,
        "events": done,
        "wall_s": round(elapsed, 3),
        "cpu_s": round(cpu, 3),
        "events_per_s_wall": int(done / elapsed),
        "events_per_s_cpu": int(done / cpu),
        "matches": matched,
    }
