"""Per-filter counters: counted per transaction, published only once the transaction commits.

Each :class:`RouterMetrics` has its own Prometheus registry, so several routers in one process
(tests, the demo) never collide; ``serve(port)`` exposes it with ``/healthz`` and ``/readyz``
(observe/endpoint.py) on 127.0.0.1 unless told otherwise. ``health`` is the router's readiness:
assigned by its group, its loop turning. End-to-end latency per route is ``filteredAt -
createdDate`` (source commit -> routed) for every routed record: the hot loop only counts the
record in its bucket (:func:`e2e_bucket`, a bisect: prometheus_client's ``observe`` costs ~1 us, too
much at 100k records/s); the counts are published when their transaction commits.
"""

from __future__ import annotations

import contextlib
import threading
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from cdcrouter.observe.endpoint import Heartbeat

__all__ = ["E2E_BOUNDS_MS", "RouterMetrics", "e2e_bucket", "e2e_counts"]

# Upper bounds (ms) of the end-to-end latency buckets; a transaction's per-filter counts are a list
# of len + 2: one count per bucket, the +Inf bucket, then the sum of the latencies (ms).
E2E_BOUNDS_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000)


# e2e_bucket(age_ms): index of the bucket it falls in (Prometheus ``le``: the first bound >= it); a
# partial, so the hot loop pays a C call, not a Python frame.
e2e_bucket = partial(bisect_left, E2E_BOUNDS_MS)


def e2e_counts() -> list[int]:
    return [0] * (len(E2E_BOUNDS_MS) + 2)


class _E2ECollector(Collector):
    """``cdcrouter_route_e2e_latency_seconds`` from bucket counts added per committed transaction."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[tuple[str, str, str], list[int]] = {}

    def add(self, labels: tuple[str, str, str], counts: list[int]) -> None:
        with self._lock:
            total = self._routes.setdefault(labels, e2e_counts())
            for i, n in enumerate(counts):
                total[i] += n

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "cdcrouter_route_e2e_latency_seconds",
            "Per route: source commit (eventHeader.createdDate) -> routed (filterMetadata.filteredAt)",
            labels=["filter_id", "consumer_id", "topic"],
        )
        with self._lock:
            routes = {k: list(v) for k, v in self._routes.items()}
        for labels, counts in sorted(routes.items()):
            cumulative, buckets = 0, []
            for bound, n in zip((*E2E_BOUNDS_MS, float("inf")), counts[:-1], strict=True):
                cumulative += n
                buckets.append((floatToGoString(bound / 1000), cumulative))
            family.add_metric(list(labels), buckets, counts[-1] / 1000)
        yield family


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._consumed = PromCounter(
            "cdcrouter_route_consumed", "Raw records consumed and committed", registry=self.registry
        )
        self._matched = PromCounter(
            "cdcrouter_route_matched",
            "Events routed per filter (committed)",
            ["filter_id", "consumer_id", "topic"],
            registry=self.registry,
        )
        self._dlq = PromCounter(
            "cdcrouter_route_dead_lettered", "Undecodable records sent to the DLQ", registry=self.registry
        )
        self._txns = PromCounter(
            "cdcrouter_route_transactions", "Transactions by outcome", ["outcome"], registry=self.registry
        )
        self._reloads = PromCounter(
            "cdcrouter_route_filter_reloads",
            "filters.yaml reloads by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self._commit_s = Histogram(
            "cdcrouter_route_commit_seconds",
            "Time to commit one transaction (offsets + commit), the floor of routing latency",
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
            registry=self.registry,
        )
        self._e2e = _E2ECollector()
        self.registry.register(self._e2e)
        self._lag = Gauge(
            "cdcrouter_route_lag",
            "Raw records behind the partition's high watermark, per partition this router owns",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.health = Heartbeat(reason="not assigned by its group yet")
        self.server: Any = None
        self.recent_commits_ms: list[float] = []  # since the last log line: what the summary reports
        self.consumed = 0
        self.dead_lettered = 0
        self.matched: Counter[str] = Counter()
        self._labels: dict[str, tuple[str, str, str]] = {}

    def commit(
        self,
        consumed: int,
        dead_lettered: int,
        matched: Counter[str],
        labels: dict[str, tuple[str, str]],
        e2e: dict[str, list[int]] | None = None,
    ) -> None:
        """Add one committed transaction's counts. ``labels``: filter id -> (consumer id, topic);
        ``e2e``: filter id -> its routed records' ``filteredAt - createdDate`` as :func:`e2e_counts`."""
        self.consumed += consumed
        self.dead_lettered += dead_lettered
        self._consumed.inc(consumed)
        if dead_lettered:
            self._dlq.inc(dead_lettered)
        for fid, n in matched.items():
            self.matched[fid] += n
            consumer, topic = labels.get(fid, ("?", "?"))
            self._matched.labels(fid, consumer, topic).inc(n)
        for fid, counts in (e2e or {}).items():
            consumer, topic = labels.get(fid, ("?", "?"))
            self._e2e.add((fid, consumer, topic), counts)
        self._txns.labels("committed").inc()

    def lag(self, topic: str, partition: int, records: int | None) -> None:
        """A partition's lag; ``None``: no longer owned (another instance reports it)."""
        if records is None:
            with contextlib.suppress(KeyError):
                self._lag.remove(topic, str(partition))
        else:
            self._lag.labels(topic, str(partition)).set(records)

    def commit_took(self, seconds: float) -> None:
        self._commit_s.observe(seconds)
        self.recent_commits_ms.append(seconds * 1000)

    def commit_timing(self) -> str:
        """``commits=N p50=.. max=.. ms`` since the last call (for the periodic log line)."""
        took = sorted(self.recent_commits_ms)
        self.recent_commits_ms = []
        if not took:
            return "commits=0"
        return f"commits={len(took)} commit_ms p50={took[len(took) // 2]:.1f} max={took[-1]:.1f}"

    def aborted(self) -> None:
        self._txns.labels("aborted").inc()

    def reload(self, outcome: str) -> None:
        self._reloads.labels(outcome).inc()

    def summary(self) -> str:
        per_filter = " ".join(f"{fid}={n}" for fid, n in sorted(self.matched.items()))
        return f"consumed={self.consumed} dlq={self.dead_lettered} {per_filter}".strip()

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Serve ``/metrics``, ``/healthz``, ``/readyz`` on ``addr:port`` (port 0: any free port)."""
        from cdcrouter.observe.endpoint import MetricsServer

        self.server = MetricsServer(port, addr, self.registry, [("router", self.health)])

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
