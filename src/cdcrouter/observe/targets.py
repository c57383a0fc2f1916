"""What the status view looks at: one pipeline's topics, groups and slot, resolved from the same
``pipeline.yaml`` and ``filters.yaml`` the other commands read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdcrouter.route.filterset import RouteSpec as Route  # one enabled filter: topic and consumer


@dataclass(frozen=True)
class Targets:
    raw_topic: str
    router_group: str
    routes: tuple[Route, ...]
    router_dlq: str
    pipeline: Any | None = None  # cdcrouter.capture.pipeline.Pipeline; None: no capture section

    @property
    def filtered_topics(self) -> list[str]:
        return sorted({r.topic for r in self.routes})

    @property
    def capture_dlq(self) -> str | None:
        return self.pipeline.raw_topic.dlq_topic if self.pipeline is not None else None


def resolve_targets(
    filters: Path | None, pipeline: Any | None, raw_topic: str | None, router_group: str
) -> Targets:
    """The pipeline's raw topic (``--raw-topic``, else the pipeline's, else the router's default),
    its filters' routes and dead-letter topics."""
    from cdcrouter.route.engine import DEFAULT_RAW_TOPIC, dlq_topic_for

    raw = raw_topic or (pipeline.raw_topic.name if pipeline is not None else DEFAULT_RAW_TOPIC)
    routes: tuple[Route, ...] = ()
    if filters is not None:
        from cdcrouter.filters import load_filters

        fs = load_filters(filters)
        routes = tuple(Route(f.id, f.consumer_id, f.output_topic) for f in fs.enabled())
    return Targets(raw, router_group, routes, dlq_topic_for(raw), pipeline)
