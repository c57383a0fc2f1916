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
from cdcrouter.observe.kafka_probe import KafkaProbe

MAX_COUNTED = 20_000  # beyond this many records in a window, a topic's rate comes from offsets


def _decoder(conns: Any) -> Any:
    from cdcrouter.consumer._serde import RegistryClient, decode

    registry = RegistryClient(conns.registry)
    return lambda value: decode(registry, value)


def _filter_id(record: dict[str, Any]) -> str | None:
    meta = record.get("filterMetadata") or {}
    return meta.get("filterId")


def count_window(
    probe: KafkaProbe, decode: Any, topic: str, before: _kafka.Bounds, after: _kafka.Bounds
) -> tuple[Counter[str], bool]:
    """Records committed to ``topic`` between two samples, per filter id; False as second value when
    the window was too large to read (the caller then falls back to offsets)."""
    window = {p: (before[p][1], end) for p, (_, end) in after.items() if p in before and end > before[p][1]}
    if sum(end - start for start, end in window.values()) > MAX_COUNTED:
        return Counter(), False
    counts: Counter[str] = Counter()
    for msg in probe.read(topic, window):
        try:
            counts[_filter_id(decode(msg.value())) or "?"] += 1
        except ConsumerError:
            counts["?"] += 1  # not ours to judge here: the consumer's DLQ will say
    return counts, True


def newest_latencies(
    probe: KafkaProbe, decode: Any, topic: str, bounds: _kafka.Bounds, n: int
) -> dict[str, dict[str, Any]]:
    """Per filter id, latency figures over (about) the ``n`` newest committed records of ``topic``."""
    if n <= 0 or not bounds:
        return {}
    per_part = max(1, math.ceil(n / len(bounds)))
    window = {p: (max(low, end - per_part), end) for p, (low, end) in bounds.items() if end > low}
    e2e: dict[str, list[int]] = defaultdict(list)
    routing: dict[str, list[int]] = defaultdict(list)
    newest: dict[str, int] = {}
    for msg in probe.read(topic, window):
        try:
            rec = decode(msg.value())
        except ConsumerError:
            continue
        fid = _filter_id(rec)
        header = rec.get("eventHeader") or {}
        routed = (rec.get("filterMetadata") or {}).get("filteredAt")
        if fid is None or not routed:
            continue
        if header.get("createdDate"):
            e2e[fid].append(routed - header["createdDate"])
        if header.get("savedDate"):
            routing[fid].append(routed - header["savedDate"])
        newest[fid] = max(newest.get(fid, 0), routed)
    now_ms = time.time() * 1000
    return {
        fid: {
            "samples": len(e2e[fid]),
            "p50_ms": _pct(e2e[fid], 50),
            "p99_ms": _pct(e2e[fid], 99),
            "max_ms": max(e2e[fid]) if e2e[fid] else None,
            "routing_p50_ms": _pct(routing[fid], 50),
            "last_routed_age_s": round((now_ms - newest[fid]) / 1000, 1),
        }
        for fid in newest
    }


def _pct(values: list[int], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))])
