"""Typed, immutable views of a decoded business event.

Handlers get these instead of Avro dicts so that a typo in a field name is an ``AttributeError``
at once, not a silent ``None`` three services later. Attribute values stay strings (the event
contract's canonical form); the helpers convert on request, without float rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class EventHeader:
    uuid: str
    event_name: str
    created_date: int
    saved_date: int
    event_type: str | None = None


@dataclass(frozen=True, slots=True)
class Entity:
    """One changed entity: its type, id and the changed attributes (dotted keys for JSON columns)."""

    entity_type: str
    entity_id: str
    updated_attributes: Mapping[str, str | None] = field(default_factory=lambda: MappingProxyType({}))

    def attr(self, key: str, default: Any = None) -> str | None:
        """The attribute's canonical string, ``default`` when the event does not carry it."""
        return self.updated_attributes.get(key, default)

    def has(self, key: str) -> bool:
        return key in self.updated_attributes

    def decimal(self, key: str, default: Decimal | None = None) -> Decimal | None:
        """The attribute as an exact ``Decimal`` (``default`` when absent, null or not a number:
        PostgreSQL's ``NaN`` too, which no comparison takes; ``Infinity`` stays infinite)."""
        raw = self.updated_attributes.get(key)
        if raw is None or "_" in raw:  # Decimal() reads "1_000"; the filter language does not
            return default
        try:
            value = Decimal(raw)
        except InvalidOperation:
            return default
        return default if value.is_nan() else value

    def integer(self, key: str, default: int | None = None) -> int | None:
        """The attribute as an int; ``default`` when absent, null or not a whole (finite) number."""
        value = self.decimal(key)
        if value is None or not value.is_finite() or value != value.to_integral_value():
            return default
        return int(value)

    def boolean(self, key: str, default: bool | None = None) -> bool | None:
        """``true``/``false`` (the canonical form; ``t``/``f`` too) as a bool, else ``default``."""
        raw = (self.updated_attributes.get(key) or "").lower()
        return True if raw in ("true", "t") else False if raw in ("false", "f") else default

    def timestamp(self, key: str, default: datetime | None = None) -> datetime | None:
        """An ISO-8601 timestamp attribute (UTC ``...Z`` in the canonical form) as a datetime."""
        raw = self.updated_attributes.get(key)
        if raw is None:
            return default
        try:
            return datetime.fromisoformat(raw)
        except ValueError:
            return default


@dataclass(frozen=True, slots=True)
class SourceMetadata:
    table: str | None = None
    operation: str | None = None
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class FilterMetadata:
    filter_id: str
    consumer_id: str
    filtered_at: int


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a record was read: enough to find it again (``kcat -t topic -p partition -o offset``)."""

    topic: str
    partition: int
    offset: int
    key: str | None = None
    timestamp: int | None = None

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class Event:
    """A decoded (Filtered)BusinessEvent. ``filter`` is ``None`` on the raw topic."""

    header: EventHeader
    entities: tuple[Entity, ...]
    source: SourceMetadata
    filter: FilterMetadata | None
    origin: Origin | None = None

    @property
    def uuid(self) -> str:
        return self.header.uuid

    @property
    def name(self) -> str:
        return self.header.event_name

    @property
    def entity(self) -> Entity:
        """The first entity (most events carry exactly one)."""
        if not self.entities:
            raise LookupError(f"event {self.uuid} ({self.name}) carries no entities")
        return self.entities[0]

    def entities_of(self, entity_type: str) -> tuple[Entity, ...]:
        return tuple(e for e in self.entities if e.entity_type == entity_type)

    def to_dict(self) -> dict[str, Any]:
        """The event in the Avro contract's shape (camelCase), for JSON output and tests."""
        out: dict[str, Any] = {
            "eventHeader": {
                "uuid": self.header.uuid,
                "eventName": self.header.event_name,
                "createdDate": self.header.created_date,
                "savedDate": self.header.saved_date,
                "eventType": self.header.event_type,
            },
            "eventBody": {
                "entities": [
                    {
                        "entityType": e.entity_type,
                        "entityId": e.entity_id,
                        "updatedAttributes": dict(e.updated_attributes),
                    }
                    for e in self.entities
                ]
            },
            "sourceMetadata": {
                "table": self.source.table,
                "operation": self.source.operation,
                "timestamp": self.source.timestamp,
            },
        }
        if self.filter is not None:
            out["filterMetadata"] = {
                "filterId": self.filter.filter_id,
                "consumerId": self.filter.consumer_id,
                "filteredAt": self.filter.filtered_at,
            }
        return out

    @classmethod
    def from_avro(cls, record: Mapping[str, Any], origin: Origin | None = None) -> Event:
        """Build from the Avro record dict; tolerant of added fields (schema evolution)."""
        h = record["eventHeader"]
        body = record.get("eventBody") or {}
        src = record.get("sourceMetadata") or {}
        fm = record.get("filterMetadata")
        return cls(
            header=EventHeader(
                uuid=h["uuid"],
                event_name=h["eventName"],
                created_date=h.get("createdDate", 0),
                saved_date=h.get("savedDate", 0),
                event_type=h.get("eventType"),
            ),
            entities=tuple(
                Entity(
                    entity_type=e["entityType"],
                    entity_id=e["entityId"],
                    updated_attributes=MappingProxyType(dict(e.get("updatedAttributes") or {})),
                )
                for e in body.get("entities") or ()
            ),
            source=SourceMetadata(
                table=src.get("table"), operation=src.get("operation"), timestamp=src.get("timestamp")
            ),
            filter=None
            if fm is None
            else FilterMetadata(
                filter_id=fm["filterId"], consumer_id=fm["consumerId"], filtered_at=fm["filteredAt"]
            ),
            origin=origin,
        )
