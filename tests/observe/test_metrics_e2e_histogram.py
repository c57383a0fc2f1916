"""The router's end-to-end latency histogram is counted by bisect in the hot loop and published by
its own collector; prometheus_client's Histogram, fed the same values, is the oracle."""

from __future__ import annotations

import random
from collections import Counter

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cdcrouter.route.metrics import E2E_BOUNDS_MS, RouterMetrics, e2e_bucket, e2e_counts


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, str], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, s.labels.get("le", "")): s.value
        for family in text_string_to_metric_families(text)
        if family.name == name
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_bucket_counts_match_prometheus_histogram() -> None:
    rng = random.Random(7)
    ages = [rng.choice([0, 10, 11, 25, 999, 1000, 1001, 300000, 300001]) for _ in range(50)]
    ages += [rng.randrange(0, 400_000) for _ in range(2_000)]
    oracle_registry = CollectorRegistry()
    oracle = Histogram(
        "cdcrouter_route_e2e_latency_seconds",
        "oracle",
        ["filter_id", "consumer_id", "topic"],
        buckets=[b / 1000 for b in E2E_BOUNDS_MS],
        registry=oracle_registry,
    )
    metrics = RouterMetrics()
    for chunk in (ages[:700], ages[700:]):  # two committed transactions
        counts = e2e_counts()
        for age in chunk:
            counts[e2e_bucket(age)] += 1
            counts[-1] += age
            oracle.labels("f", "c", "t").observe(age / 1000)
        metrics.commit(len(chunk), 0, Counter({"f": len(chunk)}), {"f": ("c", "t")}, {"f": counts})
    got = _samples(metrics.registry, "cdcrouter_route_e2e_latency_seconds")
    want = _samples(oracle_registry, "cdcrouter_route_e2e_latency_seconds")
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert abs(got[key] - value) < 1e-6, (key, got[key], value)
    assert got[("cdcrouter_route_e2e_latency_seconds_count", "")] == len(ages)
