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
from decimal import Decimal
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition

from cdcrouter.config import Connections
from cdcrouter.consumer import _kafka
from cdcrouter.consumer._errors import ConsumerError, DecodeError
from cdcrouter.consumer._event import Event, Origin
from cdcrouter.consumer._serde import RegistryClient, UnknownSchemaId, decode


@dataclass(frozen=True)
class Tailed:
    """One record: its decoded event, or why it could not be decoded.

    ``record`` is the Avro record as its writer schema has it, so fields added to the raw schema
    after this release (an evolved schema) are shown too; ``event`` is the contract's view."""

    origin: Origin
    event: Event | None
    error: str | None = None
    record: dict[str, Any] | None = None

    @property
    def extras(self) -> dict[str, Any]:
        """Fields of the record the contract does not have (dotted paths), e.g. ``eventHeader.traceId``."""
        if self.record is None or self.event is None:
            return {}
        out: dict[str, Any] = {}
        _extras(self.record, self.event.to_dict(), "", out)
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "topic": self.origin.topic,
            "partition": self.origin.partition,
            "offset": self.origin.offset,
            "key": self.origin.key,
            "timestamp": self.origin.timestamp,
        }
        if self.record is not None:
            out["event"] = _jsonable(self.record)
        elif self.event is not None:
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
                record = decode(registry, msg.value())
                row = Tailed(origin, Event.from_avro(record, origin), record=record)
            except (DecodeError, UnknownSchemaId, KeyError, TypeError) as exc:  # reported; the tail goes on
                row = Tailed(origin, None, getattr(exc, "message", None) or repr(exc))
            yield row
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


def _extras(record: Any, known: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(record, dict) and isinstance(known, dict):
        for k, v in record.items():
            path = f"{prefix}.{k}" if prefix else k
            if k not in known:
                out[path] = v
            elif k != "updatedAttributes":  # a map: its keys are data, not fields
                _extras(v, known[k], path, out)
    elif isinstance(record, list) and isinstance(known, list):
        for i, (item, known_item) in enumerate(zip(record, known, strict=False)):
            _extras(item, known_item, f"{prefix}[{i}]", out)


def _jsonable(value: Any) -> Any:
    """Avro values JSON can carry: bytes as hex, decimals as strings (exact)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, Decimal):
        return str(value)
    return value


def extras_text(row: Tailed, width: int = 60) -> str:
    """``+path=value`` for every field beyond the contract, cut to ``width``."""
    text = " ".join(f"+{k}={'∅' if v is None else v}" for k, v in row.extras.items())
    return text if len(text) <= width else text[: width - 1] + "…"
