"""Prometheus metrics shared by every ConsumerApp in the process, labelled by consumer.

Module-level collectors on the default registry, so several apps in one process (the demo runs
three) share one endpoint (``/metrics``, ``/healthz``, ``/readyz``: observe/endpoint.py) instead of
colliding on registration; ``/readyz`` is ready when every app serving there is.
"""

from __future__ import annotations

import os
import threading

from prometheus_client import Counter, Gauge

from cdcrouter.observe.endpoint import Check, MetricsServer

PROCESSED = Counter("cdcrouter_consumer_processed", "Events handled successfully", ["consumer", "topic"])
DUPLICATES = Counter(
    "cdcrouter_consumer_duplicates",
    "Redelivered events skipped by the idempotency store",
    ["consumer", "topic"],
)
SKIPPED = Counter("cdcrouter_consumer_unhandled", "Events with no matching handler", ["consumer", "topic"])
FAILED = Counter("cdcrouter_consumer_failed", "Handler attempts that raised", ["consumer", "topic"])
RETRIED = Counter("cdcrouter_consumer_retried", "Handler retries after a failure", ["consumer", "topic"])
DEAD_LETTERED = Counter(
    "cdcrouter_consumer_dead_lettered", "Events sent to the dead-letter topic", ["consumer", "topic"]
)
LAG = Gauge(
    "cdcrouter_consumer_lag",
    "Records behind the partition's high watermark",
    ["consumer", "topic", "partition"],
)

_servers: dict[int, MetricsServer] = {}
_lock = threading.Lock()


def serve(port: int, addr: str | None = None, name: str | None = None, ready: Check | None = None) -> None:
    """Expose the endpoint on ``addr:port`` once per process (a second app on the same port reuses
    it); ``ready``: the app ``name``'s readiness check for ``/readyz``. ``addr`` defaults to
    ``CDCROUTER_METRICS_ADDRESS``, else 127.0.0.1; a pod sets 0.0.0.0 so Prometheus can scrape it."""
    addr = addr or os.environ.get("CDCROUTER_METRICS_ADDRESS") or "127.0.0.1"
    with _lock:
        if port not in _servers:
            _servers[port] = MetricsServer(port, addr)
        if name is not None and ready is not None:
            _servers[port].add_check(name, ready)
