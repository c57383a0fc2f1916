"""Desired topics: the raw topic, every filtered topic of filters.yaml, and their dead-letter topics.

Nothing in cdcrouter relies on broker auto-creation; this is the one place that says which topics
exist and how they are configured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["TopicDefaults", "TopicSpec", "desired_topics"]

RETENTION_7_DAYS_MS = 7 * 24 * 3600 * 1000
# room above the raw topic's limit for what routing adds to a raw record: filterMetadata on a
# filtered record, the cdcrouter.* headers on a dead letter
ROUTED_HEADROOM_BYTES = 64 * 1024


@dataclass(frozen=True)
class TopicDefaults:
    """Settings for every topic cdcrouter creates (3 partitions like the seed; replication 1 locally)."""

    partitions: int = 3
    replication_factor: int = 1
    retention_ms: int = RETENTION_7_DAYS_MS
    dlq_retention_ms: int = 4 * RETENTION_7_DAYS_MS  # keep poison records long enough to look at


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)
    role: str = "filtered"  # raw | filtered | dlq

    def __hash__(self) -> int:
        return hash(self.name)


def desired_topics(
    raw_topic: str,
    filtered: dict[str, set[str]],
    defaults: TopicDefaults | None = None,
    raw_partitions: int | None = None,
    raw_replication: int | None = None,
    raw_retention_ms: int | None = None,
    raw_max_message_bytes: int | None = None,
    consumer_dlqs: bool = True,
) -> list[TopicSpec]:
    """Every topic the pipeline needs.

    Args:
        raw_topic: the topic capture writes and the router reads.
        filtered: filtered topic -> consumer ids that read it (from filters.yaml).
        defaults: partitions, replication and retention for the rest.
        raw_*: overrides for the raw topic (from pipeline.yaml's ``raw_topic``).
        consumer_dlqs: also declare ``<topic>.<consumer>.dlq`` for the consumer SDK.
    """
    from cdcrouter.capture.pipeline import RAW_MAX_MESSAGE_BYTES
    from cdcrouter.naming import router_dlq_topic

    d = defaults or TopicDefaults()
    # every topic a raw record is routed or dead-lettered to takes what the raw topic takes (the
    # broker's 1 MB default would dead-letter every change between 1 MB and the raw limit)
    routed_max = str((raw_max_message_bytes or RAW_MAX_MESSAGE_BYTES) + ROUTED_HEADROOM_BYTES)

    def config(retention_ms: int) -> dict[str, str]:
        return {"retention.ms": str(retention_ms), "max.message.bytes": routed_max}

    specs = [
        TopicSpec(
            raw_topic,
            raw_partitions or d.partitions,
            raw_replication or d.replication_factor,
            {
                "retention.ms": str(raw_retention_ms if raw_retention_ms is not None else d.retention_ms),
                "max.message.bytes": str(raw_max_message_bytes or RAW_MAX_MESSAGE_BYTES),
            },
            "raw",
        ),
        TopicSpec(
            router_dlq_topic(raw_topic),
            1,
            d.replication_factor,
            config(d.dlq_retention_ms),
            "dlq",
        ),
    ]
    for topic in sorted(filtered):
        specs.append(TopicSpec(topic, d.partitions, d.replication_factor, config(d.retention_ms), "filtered"))
        if consumer_dlqs:
            for consumer in sorted(filtered[topic]):
                specs.append(
                    TopicSpec(
                        f"{topic}.{consumer}.dlq",
                        1,
                        d.replication_factor,
                        config(d.dlq_retention_ms),
                        "dlq",
                    )
                )
    return specs
