"""Observability: ``cdcrouter status`` (one view of the whole pipeline for whoever is on call) and
the metrics/health endpoint the engines serve (:mod:`cdcrouter.observe.endpoint`).

The status view: capture (slot, retained WAL, committed position, snapshot progress), the raw
topic's router group (lag, members), per filter rates, the consumer groups of the filtered topics,
dead-letter depths, the Flink or Confluent Cloud job, and a latency estimate per route, with
problems marked. Its names load on first use: the engines import ``endpoint`` from this package
and must not pull in the status view's Kafka and registry readers (nor an import cycle with them).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

EXIT_UNHEALTHY = 3  # `status --exit-code`: 1 stays a user error, 2 a usage error

_LAZY = {
    "SCHEMA_VERSION": "cdcrouter.observe.collect",
    "StatusOptions": "cdcrouter.observe.collect",
    "collect_status": "cdcrouter.observe.collect",
    "Route": "cdcrouter.observe.targets",
    "Targets": "cdcrouter.observe.targets",
    "resolve_targets": "cdcrouter.observe.targets",
}

__all__ = ["EXIT_UNHEALTHY", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
