"""Read-only Kafka look-ups for the status view: partitions, read_committed end offsets, consumer
groups, their committed offsets and members.

Every topic a cdcrouter engine writes is transactional, so an end offset here is the last stable
offset of a read_committed client (:func:`cdcrouter.consumer._kafka.stable_bounds`), and a count
of records is a count of records read, never ``high - low`` (commit markers take offsets too).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from cdcrouter.config import Connections
from cdcrouter.consumer import _kafka
from cdcrouter.errors import CdcrouterError

STATUS_GROUP_PREFIX = "cdcrouter-status-"  # our own reader: never subscribes, never commits

Offsets = dict[tuple[str, int], int]  # (topic, partition) -> committed offset


class KafkaProbe:
    """One AdminClient and one read_committed consumer (assign only: it never joins a group)."""

    def __init__(self, conns: Connections, timeout: float = 10.0) -> None:
        self.conns = conns
        self.timeout = timeout
        self.admin = AdminClient({**conns.kafka.to_librdkafka(), "log_level": 0})
        self.consumer = Consumer(
            _kafka.consumer_conf(conns, f"{STATUS_GROUP_PREFIX}{uuid.uuid4().hex[:8]}", log_level=0)
        )

    def close(self) -> None:
        self.consumer.close()

    def partitions(self, topics: list[str]) -> dict[str, list[int]]:
        """Partition ids of the topics that exist (a missing topic is left out)."""
        try:
            meta = self.admin.list_topics(timeout=self.timeout)
        except KafkaException as exc:
            raise CdcrouterError(
                f"Kafka at {self.conns.kafka.bootstrap_servers} unreachable: {exc}",
                hint="start it (cdcrouter stack up) or set CDCROUTER_KAFKA__BOOTSTRAP_SERVERS",
            ) from exc
        out = {}
        for t in topics:
            tm = meta.topics.get(t)
            if tm is not None and tm.error is None and tm.partitions:
                out[t] = sorted(tm.partitions)
        return out

    def topic_names(self) -> list[str]:
        return sorted(self.admin.list_topics(timeout=self.timeout).topics)

    def bounds(self, topic: str, partitions: list[int]) -> _kafka.Bounds:
        """Per partition ``(low watermark, last stable offset)``."""
        return _kafka.stable_bounds(self.consumer, topic, partitions, timeout=self.timeout)

    def read(self, topic: str, bounds: _kafka.Bounds) -> Iterator[Message]:
        """The committed records inside ``bounds``."""
        return _kafka.read_range(self.consumer, topic, bounds, idle_timeout=self.timeout)

    def group_ids(self) -> list[str]:
        """Every consumer group on the cluster but our own status readers."""
        result = self.admin.list_consumer_groups(request_timeout=self.timeout).result()
        return sorted(g.group_id for g in result.valid if not g.group_id.startswith(STATUS_GROUP_PREFIX))

    def committed(self, groups: list[str], tps: list[tuple[str, int]]) -> dict[str, Offsets]:
        """Each group's committed offsets on ``tps`` (one request per group, sent together);
        partitions without a commit are left out, and so are groups with none at all."""
        if not tps or not groups:
            return {}
        asked = [TopicPartition(t, p) for t, p in tps]
        futures: dict[str, Any] = {}
        for g in groups:
            futures.update(
                self.admin.list_consumer_group_offsets(
                    [ConsumerGroupTopicPartitions(g, asked)], request_timeout=self.timeout
                )
            )
        out: dict[str, Offsets] = {}
        for g, fut in futures.items():
            try:
                res = fut.result()
            except KafkaException:
                continue  # deleted, or rebalancing right now: shown as no commits
            offs = {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions if tp.offset >= 0}
            if offs:
                out[g] = offs
        return out

    def describe(self, groups: list[str]) -> dict[str, dict[str, Any]]:
        """State and members (client id, host, assigned partitions) of each group."""
        if not groups:
            return {}
        out: dict[str, dict[str, Any]] = {}
        for g, fut in self.admin.describe_consumer_groups(groups, request_timeout=self.timeout).items():
            try:
                d = fut.result()
            except KafkaException:
                out[g] = {"state": "UNKNOWN", "members": []}
                continue
            members = []
            for m in d.members:
                tps = m.assignment.topic_partitions if m.assignment else []
                members.append(
                    {
                        "member_id": m.member_id,
                        "client_id": m.client_id,
                        "host": m.host,
                        "assignment": sorted(f"{tp.topic}:{tp.partition}" for tp in tps),
                    }
                )
            out[g] = {"state": _state_name(d.state), "members": sorted(members, key=lambda m: m["client_id"])}
        return out


def _state_name(state: Any) -> str:
    return str(getattr(state, "name", state))
