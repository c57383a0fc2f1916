"""Names every part of cdcrouter agrees on, defined once: the default raw topic and the router's
dead-letter topic beside it.

A leaf module (no imports), so capture, the filter compiler, the Flink back end, topics-as-code and
the router can all use it without importing one another (``topics`` used to import the router's
engine for these two names, and the router's tools import ``topics``).
"""

from __future__ import annotations

__all__ = ["DEFAULT_RAW_TOPIC", "router_dlq_topic"]

DEFAULT_RAW_TOPIC = "raw-business-events"


def router_dlq_topic(raw_topic: str) -> str:
    """The router's dead-letter topic for records of ``raw_topic`` it cannot route."""
    return f"{raw_topic}.router.dlq"
