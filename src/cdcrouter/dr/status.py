"""How far region B is behind region A: per mirrored partition and per consumer group.

Offsets differ between the regions (transaction markers and aborted records take offsets in A
that B never gets; MM2's own transactions add markers in B), so lag is never "A's end offset minus
B's". Instead, per partition:

* MM2's committed source offset (``mm2-offsets.<a>.internal`` in B, written in the same
  transaction as the mirrored records) says which A offset was mirrored last;
* the committed records in A after it are read (read_committed) and counted: that count is the
  lag in records, and the age of the oldest of them is the lag in seconds.

Per consumer group: A's committed offset against the newest checkpoint in B
(``<a>.checkpoints.internal``: upstream -> downstream offset) and B's synced group offset.
"""

from __future__ import annotations

import json
import re
import struct
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, IsolationLevel, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from cdcrouter.config.connections import KafkaSettings
from cdcrouter.dr.mirror import MirrorSpec
from cdcrouter.errors import DrError

SOURCE_CONNECTOR = "MirrorSourceConnector"


def _conf(kafka: KafkaSettings) -> dict[str, Any]:
    conf = kafka.to_librdkafka()
    conf["log_level"] = 3
    return conf


def _consumer(kafka: KafkaSettings) -> Consumer:
    return Consumer(
        {
            **_conf(kafka),
            "group.id": f"cdcrouter-dr-status-{uuid.uuid4().hex[:8]}",  # never committed
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )


def _admin(kafka: KafkaSettings) -> AdminClient:
    return AdminClient(_conf(kafka))


def committed_ends(
    admin: AdminClient, tps: list[TopicPartition], timeout_s: float = 15.0
) -> dict[tuple[str, int], int]:
    """The last stable offset (end of committed data) of each partition."""
    if not tps:
        return {}
    req = {tp: OffsetSpec.latest() for tp in tps}
    out: dict[tuple[str, int], int] = {}
    for tp, fut in admin.list_offsets(
        req, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=timeout_s
    ).items():
        out[(tp.topic, tp.partition)] = fut.result().offset
    return out


def earliest(
    admin: AdminClient, tps: list[TopicPartition], timeout_s: float = 15.0
) -> dict[tuple[str, int], int]:
    if not tps:
        return {}
    futs = admin.list_offsets({tp: OffsetSpec.earliest() for tp in tps}, request_timeout=timeout_s)
    return {(tp.topic, tp.partition): fut.result().offset for tp, fut in futs.items()}


def partitions_of(admin: AdminClient, topics: Iterable[str]) -> tuple[list[TopicPartition], list[str]]:
    """The partitions of ``topics`` that exist, and the names that do not."""
    md = admin.list_topics(timeout=15).topics
    tps, missing = [], []
    for topic in topics:
        meta = md.get(topic)
        if meta is None or meta.error is not None:
            missing.append(topic)
            continue
        tps += [TopicPartition(topic, p) for p in sorted(meta.partitions)]
    return tps, missing


def scan(
    kafka: KafkaSettings,
    starts: dict[tuple[str, int], int],
    ends: dict[tuple[str, int], int],
    on_record: Callable[[Any], bool],
    timeout_s: float = 60.0,
) -> set[tuple[str, int]]:
    """Read committed records of each partition from ``starts`` up to ``ends`` (exclusive), calling
    ``on_record(msg)``; a partition stops early when it returns False. Returns the partitions read
    to their end (control records and aborted records never reach ``on_record``)."""
    todo = {k: v for k, v in starts.items() if v < ends.get(k, 0)}
    done = {k for k in starts if k not in todo}
    if not todo:
        return done
    consumer = _consumer(kafka)
    try:
        consumer.assign([TopicPartition(t, p, off) for (t, p), off in todo.items()])
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                for key in list(todo):
                    pos = consumer.position([TopicPartition(*key)])[0].offset
                    if pos >= ends[key]:
                        done.add(key)
                        del todo[key]
                continue
            key = (msg.topic(), msg.partition())
            if key not in todo:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    done.add(key)
                    del todo[key]
                    continue
                raise DrError(
                    f"cannot read {key[0]}[{key[1]}]: {msg.error().str()}", hint="is Kafka reachable?"
                )
            if msg.offset() >= ends[key]:
                done.add(key)
                del todo[key]
                continue
            if not on_record(msg):
                del todo[key]
                continue
            if msg.offset() + 1 >= ends[key]:
                done.add(key)
                del todo[key]
        if todo:
            raise DrError(
                f"timed out reading {', '.join(f'{t}[{p}]' for t, p in todo)}",
                hint="a stuck transaction holds read_committed readers back until it times out",
            )
        return done
    finally:
        consumer.close()


def read_topic(kafka: KafkaSettings, topic: str, timeout_s: float = 60.0) -> list[Any]:
    """Every committed record of ``topic`` (all partitions), or [] if it does not exist."""
    admin = _admin(kafka)
    tps, missing = partitions_of(admin, [topic])
    if missing:
        return []
    ends = committed_ends(admin, tps)
    out: list[Any] = []
    scan(kafka, dict.fromkeys(ends, 0), ends, lambda m: out.append(m) or True, timeout_s)
    return out


def task_states(spec: MirrorSpec) -> dict[str, str]:
    """Connector name -> the state of its task 0 (RUNNING, FAILED, ...), from MM2's status topic."""
    states: dict[str, str] = {}
    for msg in read_topic(spec.target, spec.status_topic, timeout_s=20):
        key = (msg.key() or b"").decode()
        if not key.startswith("status-task-") or not key.endswith("-0"):
            continue
        name = key[len("status-task-") : -2]
        if msg.value() is None:
            states.pop(name, None)
        else:
            states[name] = json.loads(msg.value()).get("state", "?")
    return states


def mirrored_offsets(spec: MirrorSpec) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the last source offset MM2 has committed as mirrored."""
    out: dict[tuple[str, int], int] = {}
    for msg in read_topic(spec.target, spec.offsets_topic):
        try:
            name, part = json.loads(msg.key())
        except (TypeError, ValueError):
            continue
        if name != SOURCE_CONNECTOR or part.get("cluster") != spec.source_alias:
            continue
        key = (part["topic"], int(part["partition"]))
        if msg.value() is None:
            out.pop(key, None)
        else:
            out[key] = int(json.loads(msg.value())["offset"])
    return out


def _string(buf: bytes, at: int) -> tuple[str, int]:
    (size,) = struct.unpack_from(">h", buf, at)
    return buf[at + 2 : at + 2 + size].decode(), at + 2 + size


def checkpoints(spec: MirrorSpec) -> dict[tuple[str, str, int], tuple[int, int]]:
    """(group, topic, partition) -> (upstream offset in A, downstream offset in B), the newest
    checkpoint each (MM2's ``Checkpoint`` record: key group, topic, partition; value version,
    upstream, downstream, metadata)."""
    out: dict[tuple[str, str, int], tuple[int, int]] = {}
    for msg in read_topic(spec.target, spec.checkpoints_topic):
        key, value = msg.key(), msg.value()
        if not key or not value:
            continue
        group, at = _string(key, 0)
        topic, at = _string(key, at)
        (partition,) = struct.unpack_from(">i", key, at)
        _version, upstream, downstream = struct.unpack_from(">hqq", value, 0)
        out[(group, topic, partition)] = (upstream, downstream)
    return out


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    source_end: int  # A's last stable offset
    target_end: int  # B's last stable offset (offsets differ between regions)
    mirrored_through: int  # the last A offset MM2 committed as mirrored (-1: none yet)
    behind_records: int  # committed records in A not yet in B
    behind_seconds: float  # age of the oldest of them (0 when caught up)
    last_mirrored_ms: int | None  # timestamp of the newest record in B
    exact: bool  # False when the scan stopped at its limit (behind_records is then a lower bound)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GroupLag:
    group: str
    topic: str
    partition: int
    source_committed: int  # A's committed offset
    checkpoint_upstream: int | None  # newest checkpoint: A offset ...
    checkpoint_downstream: int | None  # ... and the B offset it translates to
    target_committed: int | None  # the offset synced into B's __consumer_offsets
    behind_offsets: int | None  # A committed minus the checkpoint's upstream (None: no checkpoint yet)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DrStatus:
    source_alias: str
    target_alias: str
    mirror_state: str  # RUNNING, FAILED, ... from MM2's status topic (or "not running")
    partitions: tuple[PartitionLag, ...]
    groups: tuple[GroupLag, ...]
    missing_in_source: tuple[str, ...]
    missing_in_target: tuple[str, ...]

    @property
    def max_records(self) -> int:
        return max((p.behind_records for p in self.partitions), default=0)

    @property
    def max_seconds(self) -> float:
        return max((p.behind_seconds for p in self.partitions), default=0.0)

    @property
    def max_group_offsets(self) -> int | None:
        """The largest group lag; None if some group has no checkpoint yet."""
        lags = [g.behind_offsets for g in self.groups]
        return None if any(v is None for v in lags) else max((v for v in lags if v is not None), default=0)

    def breaches(self, max_records: int | None, max_seconds: float | None) -> list[str]:
        """Why this status should alert (empty: within the thresholds)."""
        out = []
        if self.missing_in_target:
            out.append(f"not in {self.target_alias}: {', '.join(self.missing_in_target)}")
        if max_records is not None and self.max_records > max_records:
            out.append(f"{self.max_records} records behind (max {max_records})")
        if max_seconds is not None and self.max_seconds > max_seconds:
            out.append(f"{self.max_seconds:.1f}s behind (max {max_seconds:g}s)")
        if max_records is not None:
            group_lag = self.max_group_offsets
            if group_lag is None:
                out.append("a consumer group has no translated offset yet")
            elif group_lag > max_records:
                out.append(f"a consumer group is {group_lag} offsets behind (max {max_records})")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source_alias,
            "target": self.target_alias,
            "mirror_state": self.mirror_state,
            "max_behind_records": self.max_records,
            "max_behind_seconds": round(self.max_seconds, 3),
            "missing_in_source": list(self.missing_in_source),
            "missing_in_target": list(self.missing_in_target),
            "partitions": [p.to_dict() for p in self.partitions],
            "groups": [g.to_dict() for g in self.groups],
        }


def _last_timestamps(
    kafka: KafkaSettings, ends: dict[tuple[str, int], int], lows: dict[tuple[str, int], int]
) -> dict[tuple[str, int], int]:
    """The timestamp of the newest committed record of each partition (from its last few offsets)."""
    last: dict[tuple[str, int], int] = {}

    def keep(msg: Any) -> bool:
        last[(msg.topic(), msg.partition())] = msg.timestamp()[1]
        return True

    starts = {k: max(lows.get(k, 0), end - 10) for k, end in ends.items()}
    scan(kafka, starts, ends, keep, timeout_s=30)
    return last


def topic_lag(spec: MirrorSpec, scan_limit: int = 100_000) -> tuple[list[PartitionLag], list[str], list[str]]:
    """Lag of every mirrored partition; also the topics missing in A and in B."""
    a_admin, b_admin = _admin(spec.source), _admin(spec.target)
    a_tps, missing_a = partitions_of(a_admin, spec.topics)
    b_tps, missing_b = partitions_of(b_admin, [t for t in spec.topics if t not in missing_a])
    a_ends, a_lows = committed_ends(a_admin, a_tps), earliest(a_admin, a_tps)
    b_ends, b_lows = committed_ends(b_admin, b_tps), earliest(b_admin, b_tps)
    mirrored = mirrored_offsets(spec)
    starts = {k: max(mirrored.get(k, -1) + 1, a_lows[k]) for k in a_ends}
    counts: dict[tuple[str, int], int] = dict.fromkeys(a_ends, 0)
    oldest: dict[tuple[str, int], int] = {}

    def count(msg: Any) -> bool:
        key = (msg.topic(), msg.partition())
        oldest.setdefault(key, msg.timestamp()[1])
        counts[key] += 1
        return counts[key] < scan_limit

    read = scan(spec.source, starts, a_ends, count)
    b_last = _last_timestamps(spec.target, b_ends, b_lows)
    now_ms = time.time() * 1000
    out = []
    for key in sorted(a_ends):
        first = oldest.get(key)
        out.append(
            PartitionLag(
                topic=key[0],
                partition=key[1],
                source_end=a_ends[key],
                target_end=b_ends.get(key, 0),
                mirrored_through=mirrored.get(key, -1),
                behind_records=counts[key],
                behind_seconds=max(0.0, (now_ms - first) / 1000) if first is not None else 0.0,
                last_mirrored_ms=b_last.get(key),
                exact=key in read,
            )
        )
    return out, missing_a, missing_b


def group_lag(spec: MirrorSpec) -> list[GroupLag]:
    """Per consumer group (matching ``spec.groups``) and partition of a mirrored topic."""
    a_admin, b_admin = _admin(spec.source), _admin(spec.target)
    patterns = [re.compile(g) for g in spec.groups]
    listed = a_admin.list_consumer_groups(request_timeout=15).result()
    names = sorted(g.group_id for g in listed.valid if any(p.fullmatch(g.group_id) for p in patterns))
    topics = set(spec.topics)
    points = checkpoints(spec)
    out: list[GroupLag] = []
    for name in names:
        a_off = _group_offsets(a_admin, name)
        mine = {k: v for k, v in a_off.items() if k[0] in topics and v >= 0}
        if not mine:
            continue
        b_off = _group_offsets(b_admin, name)
        for (topic, part), committed in sorted(mine.items()):
            point = points.get((name, topic, part))
            out.append(
                GroupLag(
                    group=name,
                    topic=topic,
                    partition=part,
                    source_committed=committed,
                    checkpoint_upstream=point[0] if point else None,
                    checkpoint_downstream=point[1] if point else None,
                    target_committed=b_off.get((topic, part)),
                    behind_offsets=max(0, committed - point[0]) if point else None,
                )
            )
    return out


def _group_offsets(admin: AdminClient, group: str) -> dict[tuple[str, int], int]:
    futs = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=15)
    out: dict[tuple[str, int], int] = {}
    for fut in futs.values():
        try:
            res = fut.result()
        except Exception:  # the group does not exist there (yet)
            return {}
        for tp in res.topic_partitions or []:
            if tp.offset >= 0:
                out[(tp.topic, tp.partition)] = tp.offset
    return out


def dr_status(spec: MirrorSpec, *, running: bool | None = None, scan_limit: int = 100_000) -> DrStatus:
    """The whole picture for ``cdcrouter dr status``. ``running``: whether the local MM2 process
    runs (None: unknown, e.g. MM2 runs elsewhere)."""
    try:
        parts, missing_a, missing_b = topic_lag(spec, scan_limit)
        groups = group_lag(spec)
        states = task_states(spec)
    except Exception as exc:
        if isinstance(exc, DrError):
            raise
        raise DrError(
            f"cannot read the mirror's state: {exc}",
            hint="are both regions reachable "
            f"({spec.source.bootstrap_servers}, {spec.target.bootstrap_servers})?",
        ) from exc
    state = states.get(SOURCE_CONNECTOR, "no task")
    if running is False:
        state = "not running"
    return DrStatus(
        spec.source_alias,
        spec.target_alias,
        state,
        tuple(parts),
        tuple(groups),
        tuple(missing_a),
        tuple(missing_b),
    )


def wait_caught_up(
    spec: MirrorSpec, timeout_s: float = 120.0, *, groups: bool = True, poll_s: float = 1.0
) -> DrStatus:
    """Wait until every mirrored partition has no committed record left to copy (and, with
    ``groups``, every consumer group has a checkpoint at its committed offset).

    Raises:
        DrError: not caught up within ``timeout_s``; the message says how far behind it is.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        status = dr_status(spec)
        behind = status.breaches(0, None) if groups else status.breaches(None, None)
        if not groups and status.max_records:
            behind.append(f"{status.max_records} records behind")
        if not behind:
            return status
        if time.monotonic() >= deadline:
            raise DrError(
                f"the mirror {spec.source_alias} -> {spec.target_alias} has not caught up within "
                f"{timeout_s:g}s: {'; '.join(behind)} "
                f"(oldest unmirrored record {status.max_seconds:.1f}s old)",
                hint="is MirrorMaker 2 running (cdcrouter dr status)? "
                "a failover now would lose these records",
            )
        time.sleep(poll_s)


def translated_offsets(spec: MirrorSpec, group: str) -> dict[tuple[str, int], int]:
    """Where ``group`` resumes in the target: per mirrored partition, the newest checkpoint's
    downstream offset (what ``RemoteClusterUtils.translateOffsets`` returns). Partitions without a
    checkpoint are left out: start those from the beginning (never the end, which would skip)."""
    topics = set(spec.topics)
    return {
        (t, p): down for (g, t, p), (_up, down) in checkpoints(spec).items() if g == group and t in topics
    }


def wait_task(spec: MirrorSpec, connector: str, timeout_s: float = 120.0) -> None:
    """Wait until MM2's ``connector`` (MirrorSourceConnector, MirrorCheckpointConnector, ...) runs
    its task. The checkpoint connector has a task only once a group to checkpoint exists."""
    deadline = time.monotonic() + timeout_s
    while (state := task_states(spec).get(connector)) != "RUNNING":
        if state == "FAILED" or time.monotonic() >= deadline:
            raise DrError(
                f"MirrorMaker 2's {connector} is {state or 'not started'} after {timeout_s:g}s",
                hint="see the mirror's log (<state>/region-b/logs/<name>.log)",
            )
        time.sleep(1.0)
