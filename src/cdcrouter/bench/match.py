"""Compiler and embedded-engine benchmarks (``cdcrouter bench generate|match``).

``bench generate`` times the whole path a user runs (YAML text -> positions -> validation -> IR ->
SQL) on filters that cycle through every operator. ``bench match`` times ``compile_filterset(...)
.match`` on one core over one of two synthetic sets, or over the user's own filters and events:

* ``realistic`` (the default): one consuming team per filter, most subscribing to 1-3 of a catalog
  of event names that grows with the teams (one name per two filters, at least 10), some to an
  entity type, each with a residual test on body fields; 3% are a regex the index cannot use.
  Most events match 1-3 filters, whatever the count (the result reports the distribution).
* ``operators``: the ``bench generate`` filters, most ORs or body tests, so the cost stays linear
  in the filters (what BENCHMARKS.md measured before the index).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from cdcrouter.backends.flink_sql import generate_sql
from cdcrouter.backends.python_eval import compile_filterset
from cdcrouter.filters import load_filters, load_filters_text

SETS = ("realistic", "operators")

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


DOMAINS = [
    "Loan", "Car", "Service", "Payment", "Customer", "Account", "Card", "Claim", "Policy", "Order",
    "Invoice", "Shipment", "Lead", "Quote", "Contract", "Vehicle", "Dealer", "Branch", "Document", "Task",
]  # fmt: skip
_VERBS = [
    "Created", "Updated", "Deleted", "Approved", "Rejected", "Submitted", "Closed", "Reopened",
    "Assigned", "Expired", "Renewed", "Cancelled", "Completed", "Flagged", "Archived", "Restored",
    "Escalated", "Merged", "Split", "Verified", "Suspended", "Activated", "Transferred", "Reviewed", "Paid",
]  # fmt: skip
_STATUSES = ["OPEN", "PENDING", "REVIEW", "ACTIVE", "CLOSED", "LATE"]
_REGIONS = ["north", "south", "east", "west", "central"]
_CHANNELS = ["web", "branch", "phone", "partner"]


def event_names(n_filters: int) -> list[str]:
    """The realistic set's catalog: ``<Domain><Verb>`` names, one per two filters, at least 10."""
    names = [f"{d}{v}" for v in _VERBS for d in DOMAINS]
    size = max(10, n_filters // 2)
    return [names[i % len(names)] + (f"V{i // len(names)}" if i >= len(names) else "") for i in range(size)]


def _residual(rng: random.Random) -> dict[str, Any]:
    attr = "eventBody.entities[0].updatedAttributes."
    return rng.choice(
        [
            {
                "field": attr + "amount",
                "operator": "greaterThan",
                "value": rng.choice([100, 1000, 5000, 20000]),
            },
            {"field": attr + "status", "operator": "in", "values": rng.sample(_STATUSES, 3)},
            {"field": attr + "region", "operator": "equals", "value": rng.choice(_REGIONS)},
            {"field": "sourceMetadata.operation", "operator": "notIn", "values": ["DELETE"]},
            {"field": attr + "score", "operator": "between", "min": 10, "max": rng.choice([50, 80, 95])},
        ]
    )


def realistic_filters(n: int, seed: int = 11, topic_prefix: str = "filtered-") -> str:
    """filters.yaml text with ``n`` teams' filters of realistic selectivity (module docstring); each
    team's topic is ``<topic_prefix>team-<i>``."""
    import json

    rng = random.Random(seed)
    names = event_names(n)
    lines = ["filters:"]
    for i in range(n):
        roll = rng.random()
        if roll < 0.85:
            k = rng.choice([1, 1, 2, 3])
            lead: dict[str, Any] = {
                "field": "eventHeader.eventName",
                "operator": "in",
                "values": rng.sample(names, k),
            }
            if k == 1:
                lead = {"field": lead["field"], "operator": "equals", "value": lead["values"][0]}
            conditions = [lead, _residual(rng)]
        elif roll < 0.97:
            conditions = [
                {
                    "field": "eventBody.entities[0].entityType",
                    "operator": "equals",
                    "value": rng.choice(DOMAINS),
                },
                _residual(rng),
                {
                    "field": "eventBody.entities[0].updatedAttributes.channel",
                    "operator": "equals",
                    "value": rng.choice(_CHANNELS),
                },
            ]
        else:
            conditions = [
                {
                    "field": "eventHeader.eventName",
                    "operator": "matches",
                    "value": f"^{rng.choice(DOMAINS)}(Created|Closed)$",
                },
                {
                    "field": "eventBody.entities[0].updatedAttributes.amount",
                    "operator": "greaterThan",
                    "value": 50000,
                },
            ]
        team = f"team-{i}"
        topic = f"{topic_prefix}{team}"
        flt = {"id": team, "consumerId": team, "outputTopic": topic, "conditions": conditions}
        lines.append("  - " + json.dumps(flt))
    return "\n".join(lines) + "\n"


def realistic_events(count: int, n_filters: int, seed: int = 7) -> list[dict[str, Any]]:
    """Events over :func:`realistic_filters`' catalog: one entity of the name's domain, 10% lack an
    attribute, a third are DELETEs, half have no eventType."""
    rng = random.Random(seed)
    names = event_names(n_filters)
    events = []
    for j in range(count):
        name = rng.choice(names)
        domain = next(d for d in DOMAINS if name.startswith(d))
        attrs: dict[str, str | None] = {
            "amount": str(rng.randrange(100_000)),
            "status": rng.choice(_STATUSES),
            "region": rng.choice(_REGIONS),
            "score": str(rng.randrange(100)),
            "channel": rng.choice(_CHANNELS),
        }
        if rng.random() < 0.1:
            del attrs[rng.choice(list(attrs))]
        events.append(
            {
                "eventHeader": {
                    "uuid": f"u{j}",
                    "eventName": name,
                    "createdDate": 1_764_000_000_000 + j,
                    "savedDate": 1_764_000_000_000 + j,
                    "eventType": rng.choice([None, "CDC"]),
                },
                "eventBody": {
                    "entities": [
                        {"entityType": domain, "entityId": f"{domain}-{j}", "updatedAttributes": attrs}
                    ]
                },
                "sourceMetadata": {
                    "table": domain.lower() + "s",
                    "operation": rng.choice(["INSERT", "UPDATE", "DELETE"]),
                    "timestamp": 1_764_000_000_000 + j,
                },
            }
        )
    return events


def bench_match(
    n_filters: int = 20,
    n_events: int = 200_000,
    *,
    synthetic: str = "realistic",
    filters_path: Path | None = None,
    events_path: Path | None = None,
    index: bool = True,
) -> dict[str, Any]:
    """Events per second through ``compile_filterset(...).match`` on one core.

    Args:
        n_filters: filters of the synthetic set (ignored with ``filters_path``).
        n_events: events matched in all; the event list (20,000 synthetic ones, or the file's) is
            cycled until then.
        synthetic: ``realistic`` or ``operators`` (module docstring).
        filters_path: the user's filters.yaml instead of the synthetic set.
        events_path: the user's events instead of the synthetic ones: one JSON event, a JSON list
            or JSON lines, in ``cdcrouter explain``'s input format (partial events are filled).
        index: False compiles every filter inline (the matcher before the index), to compare.
    """
    from cdcrouter.backends.events import EventError, read_events
    from cdcrouter.backends.index import plan_index
    from cdcrouter.ir.passes import flatten_logic

    if synthetic not in SETS:
        raise ValueError(f"unknown synthetic set {synthetic!r}: expected one of {', '.join(SETS)}")
    if filters_path is not None:
        fs = load_filters(filters_path)
    else:
        text = realistic_filters(n_filters) if synthetic == "realistic" else synthetic_filters(n_filters)
        fs = load_filters_text(text, f"{synthetic}-{n_filters}.yaml")
    enabled = len(fs.enabled())
    if events_path is not None:
        events = read_events(events_path)
    elif synthetic == "realistic":
        events = realistic_events(min(n_events, 20_000), enabled)
    else:
        events = synthetic_events(min(n_events, 20_000))
    if not events:
        raise EventError(f"{events_path}: no events to match", hint="one JSON event per line")
    c0 = time.process_time()
    compiled = compile_filterset(fs, index=index)
    compile_s = time.process_time() - c0
    plan = plan_index(flatten_logic(fs).enabled()) if index else None  # type: ignore[attr-defined]
    match = compiled.match
    per_event = Counter(min(len(match(ev)), 4) for ev in events)  # also warms the code paths
    done = 0
    matched = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while done < n_events:
        for ev in events:
            matched += len(match(ev))
        done += len(events)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "filters": enabled,
        "filters_from": str(filters_path) if filters_path else f"synthetic {synthetic}",
        "events_from": str(events_path)
        if events_path
        else f"synthetic {synthetic} ({len(events):,} distinct)",
        "index": _describe(plan) if plan else "off (every filter inline)",
        "events": done,
        "matches_per_event": round(matched / done, 2),
        "events_matching_0_1to3_over3": [
            round(per_event[0] / len(events), 3),
            round(sum(per_event[k] for k in (1, 2, 3)) / len(events), 3),
            round(per_event[4] / len(events), 3),
        ],
        "compile_s": round(compile_s, 3),
        "wall_s": round(elapsed, 3),
        "cpu_s": round(cpu, 3),
        "events_per_s_wall": int(done / elapsed),
        "events_per_s_cpu": int(done / cpu),
    }


def _describe(plan: Any) -> str:
    """``eventHeader.eventName: 840 filters, 480 values; inline: 32`` for the result."""
    parts = []
    for d in plan.dispatches:
        indexed = len({i for bucket in d.buckets.values() for i, _ in bucket})
        parts.append(f"{d.field.path}: {indexed} filters, {len(d.buckets)} values")
    return "; ".join([*parts, f"inline: {len(plan.rest)}"])
