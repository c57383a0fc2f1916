"""What the router may write: the output topics' size limits and which errors no retry can fix.

A record the broker will never accept (too large for its topic, invalid) must not be aborted and
redone: the redo hits it again, forever. The router sizes its producer from the topics'
``max.message.bytes`` (``describe_configs``), checks each record against its topic's limit before
producing it, and dead-letters what does not fit. Errors are sorted here into those that belong
to one record (dead-letter it), those that belong to a topic (stop and say which) and the rest
(abort and redo, bounded).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from cdcrouter.errors import RouteError

__all__ = [
    "AUTH_ERRORS",
    "BATCH_OVERHEAD",
    "RECORD_ERRORS",
    "UNKNOWN_TOPIC_ERRORS",
    "producer_sizing",
    "record_size",
    "topic_limits",
]

# A record batch's header (61 bytes) plus one record's varints, with room to spare: a record of
# ``limit - BATCH_OVERHEAD`` bytes of key, value and headers always fits ``max.message.bytes``.
BATCH_OVERHEAD = 512

# The broker's default message.max.bytes, used when a topic does not override it.
BROKER_DEFAULT_LIMIT = 1_048_588

# This record can never be written to this topic, however often it is retried.
RECORD_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError._BAD_MSG,
        KafkaError.INVALID_TIMESTAMP,
        KafkaError.POLICY_VIOLATION,
    }
)
# The router may not write there at all: nothing to redo until someone grants it.
AUTH_ERRORS = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
    }
)
# The topic is gone, or its metadata has not reached this client yet: the metadata decides.
UNKNOWN_TOPIC_ERRORS = frozenset(
    {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION}
)


def topic_limits(admin: AdminClient, topics: Iterable[str], timeout_s: float = 15.0) -> dict[str, int]:
    """``max.message.bytes`` per topic, as the broker enforces it (the topic's override or the
    broker's default)."""
    names = sorted(set(topics))
    if not names:
        return {}
    futures = admin.describe_configs(
        [ConfigResource(ResourceType.TOPIC, t) for t in names], request_timeout=timeout_s
    )
    limits: dict[str, int] = {}
    for resource, future in futures.items():
        try:
            entries = future.result(timeout_s)
        except KafkaException as exc:
            raise RouteError(
                f"cannot read the configuration of topic {resource.name}: {exc.args[0].str()}",
                hint="the router needs DescribeConfigs on its topics; check the broker (stack status)",
            ) from exc
        entry = entries.get("max.message.bytes")
        value = entry.value if entry is not None else None
        limits[resource.name] = int(value) if value else BROKER_DEFAULT_LIMIT
    return limits


def producer_sizing(output_limits: dict[str, int], raw_limit: int = 0) -> dict[str, Any]:
    """Producer settings that let through every record an output topic accepts (and any the raw
    topic accepted, so a reload's new topic needs no new producer), with no batch past the smallest
    output topic's limit. librdkafka's default caps a record at 1 MB: a 2 MB record the raw topic
    accepted could then never be produced, and was aborted and redone for ever."""
    if not output_limits:
        return {}
    return {
        "message.max.bytes": max(*output_limits.values(), raw_limit, 1_000_000) + BATCH_OVERHEAD,
        "batch.size": max(min(1_000_000, min(output_limits.values()) - BATCH_OVERHEAD), 1),
    }


def record_size(key: bytes | None, value: bytes | None, headers: list[Any] | None = None) -> int:
    """The bytes a record takes in a batch, without the batch's overhead."""
    size = len(key or b"") + len(value or b"")
    for name, data in headers or ():
        size += len(name) + len(data or b"")
    return size
