"""Topics as code: desired topics from filters.yaml (+ pipeline.yaml), a diff, then apply.

specs = topics_for(filters_path, pipeline_path)      # raw + filtered + DLQ topics
plan = plan_topics(admin, specs, allow_delete=False) # reads only
apply_topics(admin, plan)                            # refuses a plan with refused actions
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from cdcrouter.topics.plan import TopicAction, TopicPlan, TopicsError, admin_client, apply_topics, plan_topics
from cdcrouter.topics.spec import TopicDefaults, TopicSpec, desired_topics

__all__ = [
    "TopicAction",
    "TopicDefaults",
    "TopicPlan",
    "TopicSpec",
    "TopicsError",
    "admin_client",
    "apply_topics",
    "delete_topics",
    "desired_topics",
    "plan_topics",
    "topics_for",
]


def delete_topics(conns: Any, topics: list[str]) -> None:
    """Delete scratch topics (benchmarks, tests), waiting up to 40 s; one already gone is fine.

    Names are de-duplicated first: the broker refuses a name listed twice (INVALID_REQUEST, so that
    topic stayed), and confluent-kafka 2.16 crashed the process (SIGSEGV) on a duplicate plus a
    missing topic. The client stays alive until every result is in: a throw-away client's
    destruction cancels the deletes."""
    admin = admin_client(conns.kafka.to_librdkafka())
    futures = admin.delete_topics(list(dict.fromkeys(topics)), operation_timeout=30, request_timeout=40)
    for fut in futures.values():
        with contextlib.suppress(Exception):  # already gone, or the broker is restarting
            fut.result()


def topics_for(
    filters_path: str | Path | None,
    pipeline_path: str | Path | None = None,
    defaults: TopicDefaults | None = None,
    raw_topic: str | None = None,
    filters_text: str | None = None,
) -> list[TopicSpec]:
    """Desired topics: the raw topic (settings from pipeline.yaml if given) and every filter's topic."""
    from cdcrouter.filters import load_filters, load_filters_text
    from cdcrouter.naming import DEFAULT_RAW_TOPIC

    filtered: dict[str, set[str]] = {}
    if filters_text is not None or filters_path is not None:
        fs = load_filters_text(filters_text) if filters_text is not None else load_filters(filters_path)
        for f in fs.filters:
            filtered.setdefault(f.output_topic, set()).add(f.consumer_id)
    raw = {"name": raw_topic or DEFAULT_RAW_TOPIC}
    overrides: dict[str, int | None] = {}
    if pipeline_path is not None:
        from cdcrouter.capture.pipeline import load_pipeline

        rt = load_pipeline(pipeline_path).raw_topic
        raw["name"] = raw_topic or rt.name
        overrides = {
            "raw_partitions": rt.partitions,
            "raw_replication": rt.replication_factor,
            "raw_retention_ms": rt.retention_ms,
            "raw_max_message_bytes": rt.max_message_bytes,
        }
    return desired_topics(raw["name"], filtered, defaults, **overrides)  # type: ignore[arg-type]
