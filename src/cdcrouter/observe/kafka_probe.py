"""Read-only Kafka look-ups for the status view: partitions, read_committed end offsets, consumer
groups, their committed offsets and members.

Every topic a cdcrouter engine writes is transactional, so an end offset here is the last stable
offset of a read_committed client (:func:`cdcrouter.consumer._kafka.stable_bounds`), and a count
of records is a count of records read, never ``high - low`` (commit markers take offsets too).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from cdcrouter.config import Connections
from cdcrouter.consumer import _kafka
from cdcrouter.errors import CdcrouterError

STATUS_GROUP_PREFIX = "cdcrouter-status-"  # our own reader: never subscribes, never commits

Offsets = dict[tuple[str, int], int]  # (topic, partition) -> committed offset
Ranges = dict[tuple[str, int], tuple[int, int]]  # (topic, partition) -> [start, end)


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

    def read(self, ranges: Ranges) -> Iterator[Message]:
        """The committed records inside ``ranges`` (``[start, end)`` per topic partition), all
        topics in one pass.

        :func:`cdcrouter.consumer._kafka.read_range` reads one topic; the status view reads a few
        records from many partitions, often none at all (a trailing commit marker), so it assigns
        them all at once and polls briefly: one view costs one pass, not one per partition.
        A partition is done when the consumer's position reaches its end (markers and aborted
        records move it without a record).
        """
        todo = {tp: end for tp, (start, end) in ranges.items() if start < end}
        if not todo:
            return
        self.consumer.assign([TopicPartition(t, p, ranges[(t, p)][0]) for t, p in todo])
        last_progress = time.monotonic()
        seen: dict[tuple[str, int], int] = {}
        try:
            while todo:
                for msg in self.consumer.consume(1000, 0.05):
                    if msg.error():
                        if msg.error().code() == KafkaError._PARTITION_EOF:
                            continue
                        raise CdcrouterError(
                            f"reading {msg.topic()}: {msg.error().str()}", hint="check the broker"
                        )
                    tp = (msg.topic(), msg.partition())
                    if tp in todo and msg.offset() < todo[tp]:
                        yield msg
                now = time.monotonic()
                for pos in self.consumer.position([TopicPartition(t, p) for t, p in todo]):
                    tp = (pos.topic, pos.partition)
                    if pos.offset >= todo[tp]:
                        del todo[tp]
                    elif pos.offset != seen.get(tp):
                        seen[tp], last_progress = pos.offset, now
                if todo and now - last_progress > self.timeout:
                    raise CdcrouterError(
                        f"timed out reading {', '.join(f'{t}[{p}]' for t, p in sorted(todo))}",
                        hint="check the broker (cdcrouter stack status)",
                    )
        finally:
            self.consumer.unassign()

    def offsets_in(self, ranges: Ranges) -> dict[tuple[str, int], list[int]]:
        """Offsets of the committed records inside ``ranges``, per topic partition (ascending)."""
        out: dict[tuple[str, int], list[int]] = {tp: [] for tp in ranges}
        for msg in self.read(ranges):
            out[(msg.topic(), msg.partition())].append(msg.offset())
        return out

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
