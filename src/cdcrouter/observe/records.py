"""Decoded filtered records for the status view: per filter counts over the sampling window and
the end-to-end latency of the newest records.

Latency is ``filterMetadata.filteredAt - eventHeader.createdDate``: capture sets ``createdDate``
to the PostgreSQL commit time, so this is commit -> routed (both clocks are wall clocks of their
machines). ``filteredAt - savedDate`` is the router's share (capture's write -> routed).
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from typing import Any

from cdcrouter.consumer import _kafka
from cdcrouter.consumer._errors import ConsumerError
from cdcrouter.observe.kafka_probe import KafkaProbe, Ranges

MAX_COUNTED = 20_000  # beyond this many records in a window, a topic's rate comes from offsets


def registry_decoder(conns: Any) -> Any:
    from cdcrouter.consumer._serde import RegistryClient, decode

    registry = RegistryClient(conns.registry)
    return lambda value: decode(registry, value)


def _filter_id(record: dict[str, Any]) -> str | None:
    meta = record.get("filterMetadata") or {}
    return meta.get("filterId")


def count_window(
    probe: KafkaProbe, decode: Any, before: dict[str, _kafka.Bounds], after: dict[str, _kafka.Bounds]
) -> dict[str, Counter[str] | None]:
    """Per topic, the records committed between two samples, per filter id (one pass over all
    topics); None for a topic whose window is too large to read (its rate then comes from offsets)."""
    out: dict[str, Counter[str] | None] = {}
    ranges: Ranges = {}
    for topic, bounds in after.items():
        window = {
            (topic, p): (before[topic][p][1], end)
            for p, (_, end) in bounds.items()
            if p in before.get(topic, {}) and end > before[topic][p][1]
        }
        if sum(end - start for start, end in window.values()) > MAX_COUNTED:
            out[topic] = None
        else:
            out[topic] = Counter()
            ranges.update(window)
    for msg in probe.read(ranges):
        try:
            fid = _filter_id(decode(msg.value())) or "?"
        except ConsumerError:
            fid = "?"  # not ours to judge here: the consumer's DLQ will say
        counter = out[msg.topic()]
        assert counter is not None
        counter[fid] += 1
    return out


def newest_latencies(
    probe: KafkaProbe, decode: Any, bounds: dict[str, _kafka.Bounds], n: int
) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (topic, filter id), latency figures over (about) the ``n`` newest committed records of
    each topic, read in one pass."""
    if n <= 0:
        return {}
    ranges: Ranges = {}
    for topic, parts in bounds.items():
        per_part = max(1, math.ceil(n / max(1, len(parts))))
        ranges.update({(topic, p): (max(low, end - per_part), end) for p, (low, end) in parts.items()})
    e2e: dict[tuple[str, str], list[int]] = defaultdict(list)
    routing: dict[tuple[str, str], list[int]] = defaultdict(list)
    newest: dict[tuple[str, str], int] = {}
    for msg in probe.read(ranges):
        try:
            rec = decode(msg.value())
        except ConsumerError:
            continue
        fid = _filter_id(rec)
        header = rec.get("eventHeader") or {}
        routed = (rec.get("filterMetadata") or {}).get("filteredAt")
        if fid is None or not routed:
            continue
        key = (msg.topic(), fid)
        if header.get("createdDate"):
            e2e[key].append(routed - header["createdDate"])
        if header.get("savedDate"):
            routing[key].append(routed - header["savedDate"])
        newest[key] = max(newest.get(key, 0), routed)
    now_ms = time.time() * 1000
    return {
        key: {
            "samples": len(e2e[key]),
            "p50_ms": _pct(e2e[key], 50),
            "p99_ms": _pct(e2e[key], 99),
            "max_ms": max(e2e[key]) if e2e[key] else None,
            "routing_p50_ms": _pct(routing[key], 50),
            "last_routed_age_s": round((now_ms - newest[key]) / 1000, 1),
        }
        for key in newest
    }


def _pct(values: list[int], q: float) -> float | None:
    from cdcrouter.bench.stats import percentile  # the one definition the benchmarks use too

    return percentile(values, q)
