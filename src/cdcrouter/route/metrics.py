"""Per-filter counters: counted per transaction, published only once the transaction commits.

Each :class:`RouterMetrics` has its own Prometheus registry, so several routers in one process
(tests, the demo) never collide; ``serve(port)`` exposes it on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

from collections import Counter

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter

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
        self.recent_commits_ms: list[float] = []  # since the last log line: what the summary reports
        self.consumed = 0
        self.dead_lettered = 0
        self.matched: Counter[str] = Counter()
        self._labels: dict[str, tuple[str, str, str]] = {}

    def commit(
        self, consumed: int, dead_lettered: int, matched: Counter[str], labels: dict[str, tuple[str, str]]
    ) -> None:
        """Add one committed transaction's counts. ``labels``: filter id -> (consumer id, topic)."""
        self.consumed += consumed
        self.dead_lettered += dead_lettered
        self._consumed.inc(consumed)
        if dead_lettered:
            self._dlq.inc(dead_lettered)
        for fid, n in matched.items():
            self.matched[fid] += n
            consumer, topic = labels.get(fid, ("?", "?"))
            self._matched.labels(fid, consumer, topic).inc(n)
        self._txns.labels("committed").inc()

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
        from prometheus_client import start_http_server

        start_http_server(port, addr=addr, registry=self.registry)
