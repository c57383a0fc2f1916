"""Check a drill against its oracle: every change PostgreSQL committed, matched to events by uuid.

The events are read from the surviving region's filtered topics with a read_committed consumer
between the partitions' low watermark and last stable offset (transaction markers and aborted
records never count), and decoded with their writer schema from the registry. The expected topics
of each change are computed from the row itself, not from the filters the router ran, so a routing
mistake shows up as a loss or an unexpected event.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer

from cdcrouter.config import Connections
from cdcrouter.consumer import _kafka
from cdcrouter.consumer._serde import RegistryClient, decode


@dataclass(frozen=True, slots=True)
class SeenEvent:
    """One event of the drill's table in a filtered topic."""

    topic: str
    partition: int
    offset: int
    uuid: str
    entity_id: str
    val: str | None


@dataclass
class TopicVerdict:
    """What one topic holds compared with what it should hold."""

    topic: str
    expected: int = 0
    events: int = 0
    lost: list[str] = field(default_factory=list)  # ids of committed changes without an event
    duplicate_uuids: int = 0  # extra copies of one uuid (a consumer deduplicating by uuid drops them)
    duplicate_changes: int = 0  # extra uuids for one change (no uuid dedup can catch those)
    unexpected: list[str] = field(default_factory=list)  # events of no committed change (or misrouted)

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "expected": self.expected,
            "events": self.events,
            "lost": len(self.lost),
            "lost_sample": self.lost[:10],
            "duplicate_uuids": self.duplicate_uuids,
            "duplicate_changes": self.duplicate_changes,
            "unexpected": len(self.unexpected),
            "unexpected_sample": self.unexpected[:10],
        }


def read_events(conns: Connections, topics: Iterable[str], id_prefix: str) -> list[SeenEvent]:
    """Every committed event of ``topics`` whose entity id starts with ``id_prefix``."""
    consumer = Consumer(_kafka.consumer_conf(conns, "cdcrouter-dr-verify", **{"enable.auto.commit": False}))
    registry = RegistryClient(conns.registry)
    out: list[SeenEvent] = []
    try:
        for topic in topics:
            parts = _kafka.partitions_of(conns, topic)
            bounds = _kafka.stable_bounds(consumer, topic, parts)
            for msg in _kafka.read_range(consumer, topic, bounds):
                record = decode(registry, msg.value())
                entities = record["eventBody"]["entities"]
                entity = entities[0] if entities else {}
                eid = str(entity.get("entityId", ""))
                if not eid.startswith(id_prefix):
                    continue
                attrs = entity.get("updatedAttributes") or {}
                out.append(
                    SeenEvent(
                        topic,
                        msg.partition() or 0,
                        msg.offset() or 0,
                        record["eventHeader"]["uuid"],
                        eid,
                        attrs.get("val"),
                    )
                )
    finally:
        consumer.close()
        registry.close()
    return out


def check_topic(topic: str, expected: dict[str, str], events: list[SeenEvent]) -> TopicVerdict:
    """Compare ``events`` of one topic with the changes it should hold (``id -> val``); an event
    of a change the topic should not hold (misrouted, or no such commit) counts as unexpected."""
    v = TopicVerdict(topic, expected=len(expected), events=len(events))
    per_uuid = Counter(e.uuid for e in events)
    v.duplicate_uuids = sum(n - 1 for n in per_uuid.values() if n > 1)
    uuids_of: dict[tuple[str, str | None], set[str]] = defaultdict(set)
    for e in events:
        uuids_of[(e.entity_id, e.val)].add(e.uuid)
    v.duplicate_changes = sum(len(u) - 1 for u in uuids_of.values() if len(u) > 1)
    seen = set(uuids_of)
    v.lost = sorted(i for i, val in expected.items() if (i, val) not in seen)
    v.unexpected = sorted({i for (i, val) in seen if expected.get(i) != val})
    return v


@dataclass
class Verdict:
    """The drill's RPO: changes lost and duplicated, per topic and in total."""

    committed: int
    topics: list[TopicVerdict]
    db_lost: list[str] = field(default_factory=list)  # acknowledged commits the surviving database lacks
    in_doubt: int = 0
    in_doubt_committed: int = 0

    @property
    def lost(self) -> int:
        return sum(len(t.lost) for t in self.topics)

    @property
    def duplicate_uuids(self) -> int:
        return sum(t.duplicate_uuids for t in self.topics)

    @property
    def duplicate_changes(self) -> int:
        return sum(t.duplicate_changes for t in self.topics)

    @property
    def unexpected(self) -> int:
        return sum(len(t.unexpected) for t in self.topics)

    def to_dict(self) -> dict[str, Any]:
        return {
            "committed": self.committed,
            "lost": self.lost,
            "duplicate_uuids": self.duplicate_uuids,
            "duplicate_changes": self.duplicate_changes,
            "unexpected": self.unexpected,
            "db_lost": len(self.db_lost),
            "db_lost_sample": self.db_lost[:10],
            "in_doubt": self.in_doubt,
            "in_doubt_committed": self.in_doubt_committed,
            "topics": [t.to_dict() for t in self.topics],
        }


def verify(
    rows: dict[str, str],
    acked: dict[str, str],
    in_doubt: dict[str, str],
    events: list[SeenEvent],
    topics: dict[str, Callable[[str, str], bool]],
) -> Verdict:
    """The verdict for one drill.

    Args:
        rows: the surviving database's rows (``id -> val``): the changes that were committed.
        acked: the commits the workload saw acknowledged; any the database lacks is ``db_lost``
            (a database failover with asynchronous replication loses them before capture can).
        in_doubt: commits whose outcome the workload could not see; the database decides.
        events: what the filtered topics hold (:func:`read_events`).
        topics: topic -> predicate ``(id, val) -> bool``: which changes that topic should hold.
    """
    by_topic: dict[str, list[SeenEvent]] = defaultdict(list)
    for e in events:
        by_topic[e.topic].append(e)
    verdicts = []
    for topic, wants in sorted(topics.items()):
        expected = {i: v for i, v in rows.items() if wants(i, v)}
        verdicts.append(check_topic(topic, expected, by_topic.get(topic, [])))
    return Verdict(
        committed=len(rows),
        topics=verdicts,
        db_lost=sorted(i for i, v in acked.items() if rows.get(i) != v),
        in_doubt=len(in_doubt),
        in_doubt_committed=sum(1 for i, v in in_doubt.items() if rows.get(i) == v),
    )
