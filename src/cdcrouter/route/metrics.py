"""Per-filter counters: counted per transaction, published only once the transaction commits.

Each :class:`RouterMetrics` has its own Prometheus registry, so several routers in one process
(tests, the demo) never collide; ``serve(port)`` exposes it with ``/healthz`` and ``/readyz``
(observe/endpoint.py) on 127.0.0.1 unless told otherwise. ``health`` is the router's readiness:
assigned by its group, its loop turning. End-to-end latency per route is ``filteredAt -
createdDate`` (source commit -> routed), observed per routed record once its transaction commits.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter

from cdcrouter.observe.endpoint import Heartbeat

__all__ = ["RouterMetrics"]


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
        self._e2e_s = Histogram(
            "cdcrouter_route_e2e_latency_seconds",
            "Per route: source commit (eventHeader.createdDate) -> routed (filterMetadata.filteredAt)",
            ["filter_id", "consumer_id", "topic"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
            registry=self.registry,
        )
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
        ages_ms: dict[str, list[int]] | None = None,
    ) -> None:
        """Add one committed transaction's counts. ``labels``: filter id -> (consumer id, topic);
        ``ages_ms``: filter id -> each routed record's ``filteredAt - createdDate``."""
        self.consumed += consumed
        self.dead_lettered += dead_lettered
        self._consumed.inc(consumed)
        if dead_lettered:
            self._dlq.inc(dead_lettered)
        for fid, n in matched.items():
            self.matched[fid] += n
            consumer, topic = labels.get(fid, ("?", "?"))
            self._matched.labels(fid, consumer, topic).inc(n)
        for fid, ages in (ages_ms or {}).items():
            observe = self._e2e_s.labels(fid, *labels.get(fid, ("?", "?"))).observe
            for age in ages:
                observe(max(age, 0) / 1000)
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
