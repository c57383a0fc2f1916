"""``cdcrouter status``: one view of the whole pipeline for whoever is on call.

Capture (slot, retained WAL, committed position), the raw topic's router group (lag, members),
per filter rates, the consumer groups of the filtered topics, dead-letter depths, the Flink or
Confluent Cloud job, and an end-to-end latency estimate per route, with problems marked.
"""

from cdcrouter.observe.collect import SCHEMA_VERSION, StatusOptions, collect_status
from cdcrouter.observe.targets import Route, Targets, resolve_targets

EXIT_UNHEALTHY = 3  # `status --exit-code`: 1 stays a user error, 2 a usage error

__all__ = [
    "EXIT_UNHEALTHY",
    "SCHEMA_VERSION",
    "Route",
    "StatusOptions",
    "Targets",
    "collect_status",
    "resolve_targets",
]
