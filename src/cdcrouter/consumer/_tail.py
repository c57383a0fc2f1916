"""Read a topic for people: ``cdcrouter consume``.

Without a group it assigns every partition directly and never commits, so tailing a production
topic leaves no trace in the cluster (no consumer group, no offsets).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition

from cdcrouter.config import Connections
from cdcrouter.consumer import _kafka
from cdcrouter.consumer._errors import ConsumerError, DecodeError
from cdcrouter.consumer._event import Event, Origin
from cdcrouter.consumer._serde import RegistryClient, decode


@dataclass(frozen=True)
class Tailed:
    """One record: its decoded event, or why it could not be decoded."""

    origin: Origin
    event: Event | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "topic": self.origin.topic,
            "partition": self.origin.partition,
            "offset": self.origin.offset,
            "key": self.origin.key,
            "timestamp": self.origin.timestamp,
        }
        if self.event is not None:
            out["event"] = self.event.to_dict()
        else:
            out["error"] = self.error
        return out


def tail(
    connections: Connections,
    topic: str,
    *,
    from_beginning: bool = False,
    max_messages: int | None = None,
    group: str | None = None,
    commit: bool = False,
    idle_timeout: float | None = None,
) -> Iterator[Tailed]:
    """Yield decoded records of ``topic`` (read_committed) until ``max_messages`` or idle timeout."""
    _kafka.check_name("topic", topic)
    parts = _kafka.partitions_of(connections, topic)
    reset = "earliest" if from_beginning else "latest"
    conf = _kafka.consumer_conf(
        connections, group or f"cdcrouter-consume-{uuid.uuid4().hex[:8]}", **{"auto.offset.reset": reset}
    )
    consumer = Consumer(conf)
    registry = RegistryClient(connections.registry)
    try:
        if group is None:
            start = OFFSET_BEGINNING if from_beginning else OFFSET_END
            consumer.assign([TopicPartition(topic, p, start) for p in parts])
        else:
            consumer.subscribe([topic])
        seen = 0
        last = time.monotonic()
        while max_messages is None or seen < max_messages:
            msg = consumer.poll(0.5)
            if msg is None:
                if idle_timeout is not None and time.monotonic() - last > idle_timeout:
                    return
                continue
            if msg.error():
                if msg.error().fatal():
                    raise ConsumerError(f"reading {topic}: {msg.error()}")
                continue
            last = time.monotonic()
            key = msg.key()
            _, ts = msg.timestamp()
            origin = Origin(
                topic,
                msg.partition(),
                msg.offset(),
                key.decode("utf-8", "replace") if key else None,
                ts or None,
            )
            try:
                yield Tailed(origin, Event.from_avro(decode(registry, msg.value()), origin))
            except (DecodeError, KeyError, TypeError) as exc:
                yield Tailed(origin, None, getattr(exc, "message", None) or repr(exc))
            seen += 1
            if commit and group is not None:
                consumer.commit(offsets=[TopicPartition(topic, msg.partition(), msg.offset() + 1)])
    except KafkaException as exc:
        raise ConsumerError(
            f"reading {topic}: {exc}", hint="check the broker (cdcrouter stack status)"
        ) from exc
    finally:
        consumer.close()
        registry.close()


def iso(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def attributes_text(event: Event, width: int = 80) -> str:
    """``k=v`` pairs of every entity's changed attributes, cut to ``width``."""
    parts = []
    for ent in event.entities:
        parts.extend(f"{k}={'∅' if v is None else v}" for k, v in sorted(ent.updated_attributes.items()))
    text = " ".join(parts)
    return text if len(text) <= width else text[: width - 1] + "…"
