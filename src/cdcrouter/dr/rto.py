"""The drill's RTO: how long after the failure events flow again, end to end.

A tail reads the surviving region's filtered topics (read_committed, from their end when the drill
starts) and notes when each event arrives. Once the failure is injected, the changes committed
after it are the probes: the recovery time is the time from the failure until a probe change is
readable in a filtered topic. Because one dead router or one stuck transaction can block some
partitions while the others flow, it is reported twice: until the first probe arrived anywhere,
and until every partition delivered one (``rto_s``, the one that matters to a consumer).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from cdcrouter.config import Connections
from cdcrouter.consumer import _kafka
from cdcrouter.consumer._serde import RegistryClient, decode


@dataclass(frozen=True, slots=True)
class Arrival:
    topic: str
    partition: int
    entity_id: str
    at: float  # time.time() when this reader got it


@dataclass
class Recovery:
    """RTO figures, in seconds from the failure (None: no probe arrived there before the deadline)."""

    first_s: float | None
    rto_s: float | None
    partitions: dict[str, float | None] = field(default_factory=dict)  # "topic/partition" -> seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "first_event_s": _round(self.first_s),
            "rto_s": _round(self.rto_s),
            "partitions": {k: _round(v) for k, v in sorted(self.partitions.items())},
        }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


class ArrivalTail:
    """Notes the arrival time of every event of the drill in ``topics`` (a daemon thread)."""

    def __init__(self, conns: Connections, topics: list[str], id_prefix: str) -> None:
        self.conns = conns
        self.topics = topics
        self.id_prefix = id_prefix
        self.arrivals: list[Arrival] = []
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._guarded, name="dr-tail", daemon=True)
        self._partitions: list[tuple[str, int]] = []

    def start(self, timeout: float = 30.0) -> ArrivalTail:
        self._thread.start()
        if not self.ready.wait(timeout):
            raise TimeoutError(f"the drill's tail did not start within {timeout:.0f}s: {self.error}")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    @property
    def partitions(self) -> list[tuple[str, int]]:
        return list(self._partitions)

    def _guarded(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported through .error and the recovery figures
            self.error = exc
            self.ready.set()

    def _run(self) -> None:
        consumer = Consumer(
            _kafka.consumer_conf(self.conns, "cdcrouter-dr-tail", **{"fetch.wait.max.ms": 20})
        )
        registry = RegistryClient(self.conns.registry)
        try:
            tps = []
            for topic in self.topics:
                parts = _kafka.partitions_of(self.conns, topic)
                bounds = _kafka.stable_bounds(consumer, topic, parts)
                for p, (_, end) in bounds.items():
                    tps.append(TopicPartition(topic, p, end))
                    self._partitions.append((topic, p))
            consumer.assign(tps)
            self.ready.set()
            while not self._stop.is_set():
                for msg in consumer.consume(500, 0.05):
                    if msg.error() is not None:
                        continue
                    now = time.time()
                    try:
                        record = decode(registry, msg.value())
                    except Exception:  # not the drill's (or not decodable): the verifier reports it
                        continue
                    entities = record["eventBody"]["entities"]
                    eid = str(entities[0]["entityId"]) if entities else ""
                    if eid.startswith(self.id_prefix):
                        self.arrivals.append(Arrival(msg.topic() or "", msg.partition() or 0, eid, now))
        finally:
            consumer.close()
            registry.close()

    def recovery(self, failed_at: float, committed_at: dict[str, float]) -> Recovery:
        """RTO from ``failed_at`` given when each change (by id) was committed."""
        first: dict[tuple[str, int], float] = {}
        for a in self.arrivals:
            c = committed_at.get(a.entity_id)
            if c is None or c <= failed_at:
                continue
            key = (a.topic, a.partition)
            if key not in first or a.at < first[key]:
                first[key] = a.at
        per = {
            f"{t}/{p}": (first[(t, p)] - failed_at if (t, p) in first else None) for t, p in self._partitions
        }
        got = [v for v in per.values() if v is not None]
        complete = len(got) == len(per) and bool(per)
        return Recovery(min(got) if got else None, max(got) if complete else None, per)
