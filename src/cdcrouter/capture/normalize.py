"""Row change -> BusinessEvent: the one normalisation both capture engines use.

Pure functions over plain data: the embedded engine builds :class:`RowChange` from pgoutput,
the Debezium normalising stage builds it from Debezium's change records; both then call
:func:`normalize_row` / :func:`normalize_outbox` and get identical events.

Rules (``docs/capture.md`` has the long form):

* INSERT and SNAPSHOT: every column.
* UPDATE: the columns whose canonical value changed, plus the entity-id columns. Without the old
  row (REPLICA IDENTITY DEFAULT) every column PostgreSQL sent. JSON columns are compared key by
  key after flattening; a key that disappeared is reported as null.
* A TOASTed value PostgreSQL did not send (pgoutput's ``u`` marker, :data:`UNCHANGED`) is never
  reported, neither as changed nor as null.
* DELETE: the old row as PostgreSQL gives it: the key, or every column with REPLICA IDENTITY FULL.
* ``eventHeader.uuid`` is a UUIDv5 of the source position, so a re-delivered change keeps its id.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from hashlib import sha1
from typing import Any, Final

from cdcrouter.capture.canonical import (
    Kind,
    attribute_key,
    attributes,
    canonical_bool,
    canonical_scalar,
    canonical_timestamp,
    flatten_json,
    parse_json,
)

# Namespace of event uuids: uuid5(EVENT_NAMESPACE, position).
EVENT_NAMESPACE: Final = uuid.UUID("6f1c5e0a-9d2b-5c43-8a51-cdc0a0e7e001")


class _Unchanged:
    """pgoutput's ``u``: an unchanged TOASTed value that PostgreSQL did not send."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()
Value = str | None | _Unchanged


@dataclass(frozen=True, slots=True)
class TableShape:
    """What normalisation needs to know about one captured table."""

    table: str
    entity_type: str
    id_columns: tuple[str, ...]
    kinds: Mapping[str, Kind]
    event_names: Mapping[str, str]  # INSERT/UPDATE/DELETE/SNAPSHOT -> event name
    event_type: str | None = None
    excluded: frozenset[str] = frozenset()  # columns never reported (pipeline exclude_columns)


@dataclass(frozen=True, slots=True)
class OutboxShape:
    table: str
    event_name_column: str = "event_name"
    event_type_column: str = "event_type"
    entities_column: str = "entities"


@dataclass(slots=True)
class RowChange:
    """One row change in PostgreSQL's text form.

    ``new``/``old`` map column name to text, None (SQL NULL) or :data:`UNCHANGED`. ``old`` is
    None when PostgreSQL sent no old row; with REPLICA IDENTITY DEFAULT it holds the key only.
    ``position`` identifies the change in the source: ``<change LSN>:<table>`` for streamed
    changes (the WAL record's LSN, which pgoutput and Debezium both report), or
    ``snapshot:<LSN>:<table>`` for snapshot rows. The event uuid is derived from it plus the
    entity id, so the same change gets the same uuid on re-delivery and from either engine.
    """

    operation: str  # INSERT, UPDATE, DELETE, SNAPSHOT
    new: dict[str, Value] | None
    old: dict[str, Value] | None
    position: str
    commit_ms: int
    extra: dict[str, Any] = field(default_factory=dict)


class OutboxRowError(ValueError):
    """An outbox row that cannot become an event (goes to the capture dead-letter topic)."""


_NS_BYTES: Final = EVENT_NAMESPACE.bytes


# uuid5 variant bits: the first hex digit of the 4th group keeps its low 2 bits, with 0b10 above
_VARIANT: Final = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def event_uuid(position: str) -> str:
    """``str(uuid.uuid5(EVENT_NAMESPACE, position))``, without the UUID object (hot path)."""
    x = sha1(_NS_BYTES + position.encode()).hexdigest()
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"


def _row_attributes(row: Mapping[str, Value], kinds: Mapping[str, Kind]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for col, val in row.items():
        key = attribute_key(col) if "." in col or "\\" in col else col
        if val is None:
            out[key] = None
        elif val is not UNCHANGED:
            kind = kinds.get(col, "plain")
            if kind == "plain":
                out[key] = val  # type: ignore[assignment]
            elif kind == "timestamptz" or kind == "timestamp":
                out[key] = canonical_timestamp(val)  # type: ignore[arg-type]
            elif kind == "bool":
                out[key] = canonical_bool(val)  # type: ignore[arg-type]
            else:
                out.update(attributes(kind, col, val))  # type: ignore[arg-type]
    return out


def _changed_attributes(
    new: Mapping[str, Value], old: Mapping[str, Value], kinds: Mapping[str, Kind]
) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for col, val in new.items():
        if val is UNCHANGED:
            continue
        kind = kinds.get(col, "plain")
        if col not in old or old[col] is UNCHANGED:
            out.update(attributes(kind, col, val))  # type: ignore[arg-type]
            continue
        before = old[col]
        if before == val:
            continue
        if kind == "json":
            old_flat = dict(attributes(kind, col, before))  # type: ignore[arg-type]
            new_flat = dict(attributes(kind, col, val))  # type: ignore[arg-type]
            for k, v in new_flat.items():
                if k not in old_flat or old_flat[k] != v:
                    out[k] = v
            for k in old_flat.keys() - new_flat.keys():
                out[k] = None
        else:
            new_attrs = list(attributes(kind, col, val))  # type: ignore[arg-type]
            if new_attrs != list(attributes(kind, col, before)):  # type: ignore[arg-type]
                out.update(new_attrs)
    return out


def entity_id(row: Mapping[str, Value], shape: TableShape) -> str:
    if len(shape.id_columns) == 1:  # the common case: one text/number key
        val = row.get(shape.id_columns[0])
        if type(val) is str and shape.kinds.get(shape.id_columns[0], "plain") == "plain":
            return val
    parts = []
    for col in shape.id_columns:
        val = row.get(col)
        if val is UNCHANGED or val is None:
            val = ""
        parts.append(canonical_scalar(shape.kinds.get(col, "plain"), val) or "")  # type: ignore[arg-type]
    return ":".join(parts)


def moved_key(change: RowChange, shape: TableShape) -> bool:
    """Whether an UPDATE gives the row another entity id (its key changed). Such an update is
    reported as the old entity's DELETE and the new entity's INSERT (:func:`split_moved_key`), as
    PostgreSQL reports a row moved to another partition, and as Debezium reports a key change:
    an UPDATE under the new id would leave the old entity alive and the new one with only the
    changed columns."""
    old, new = change.old, change.new
    if change.operation != "UPDATE" or not old or not new:
        return False
    for col in shape.id_columns:
        if col not in old or col not in new or old[col] is UNCHANGED or new[col] is UNCHANGED:
            return False
    return entity_id(old, shape) != entity_id(new, shape)


def split_moved_key(change: RowChange) -> tuple[RowChange, RowChange]:
    """A key-changing UPDATE as (DELETE of the old row, INSERT of the new row); a TOASTed value
    PostgreSQL did not send is taken from the old row when it has it (REPLICA IDENTITY FULL)."""
    old, new = change.old or {}, change.new or {}
    row = {c: old.get(c, UNCHANGED) if v is UNCHANGED else v for c, v in new.items()}
    return (
        RowChange("DELETE", None, dict(old), change.position, change.commit_ms),
        RowChange("INSERT", row, None, change.position, change.commit_ms),
    )


def _without(change: RowChange, excluded: frozenset[str]) -> RowChange:
    def strip(row: dict[str, Value] | None) -> dict[str, Value] | None:
        return None if row is None else {c: v for c, v in row.items() if c not in excluded}

    return RowChange(
        change.operation, strip(change.new), strip(change.old), change.position, change.commit_ms
    )


def normalize_row(change: RowChange, shape: TableShape, saved_ms: int) -> dict[str, Any]:
    """One table row change as a BusinessEvent dict (fastavro-ready)."""
    op = change.operation
    if shape.excluded:
        change = _without(change, shape.excluded)
    if op == "DELETE":
        row = change.old or {}
        attrs = _row_attributes(row, shape.kinds)
    else:
        row = change.new or {}
        if op == "UPDATE" and change.old is not None:
            attrs = _changed_attributes(row, change.old, shape.kinds)
        else:
            attrs = _row_attributes(row, shape.kinds)
        if op == "UPDATE":
            for col in shape.id_columns:
                val = row.get(col)
                if val is not UNCHANGED:
                    attrs.update(attributes(shape.kinds.get(col, "plain"), col, val))  # type: ignore[arg-type]
    eid = entity_id(row, shape)
    return {
        "eventHeader": {
            "uuid": event_uuid(f"{change.position}:{eid}"),
            "eventName": shape.event_names[op],
            "createdDate": change.commit_ms,
            "savedDate": saved_ms,
            "eventType": shape.event_type,
        },
        "eventBody": {
            "entities": [
                {
                    "entityType": shape.entity_type,
                    "entityId": eid,
                    "updatedAttributes": attrs,
                }
            ]
        },
        "sourceMetadata": {"table": shape.table, "operation": op, "timestamp": change.commit_ms},
    }


def normalize_outbox(change: RowChange, shape: OutboxShape, saved_ms: int) -> dict[str, Any]:
    """An outbox INSERT as the BusinessEvent the application described.

    Raises:
        OutboxRowError: the row lacks an event name or its entities are not a JSON list of
            ``{"entityType", "entityId", "updatedAttributes"}`` objects.
    """
    row = change.new or {}
    name = row.get(shape.event_name_column)
    if not isinstance(name, str) or not name:
        raise OutboxRowError(f"column {shape.event_name_column} is empty")
    event_type = row.get(shape.event_type_column)
    raw_entities = row.get(shape.entities_column)
    if not isinstance(raw_entities, str):
        raise OutboxRowError(f"column {shape.entities_column} is empty")
    try:
        parsed = parse_json(raw_entities)
    except ValueError as exc:
        raise OutboxRowError(f"column {shape.entities_column} is not JSON: {exc}") from exc
    if isinstance(parsed, dict):
        parsed = [parsed]
    if not isinstance(parsed, list) or not parsed:
        raise OutboxRowError(f"column {shape.entities_column} must be a non-empty JSON array of entities")
    entities = []
    for i, ent in enumerate(parsed):
        if not isinstance(ent, dict) or "entityType" not in ent or "entityId" not in ent:
            raise OutboxRowError(f"{shape.entities_column}[{i}] needs entityType and entityId")
        attrs_in = ent.get("updatedAttributes") or {}
        if not isinstance(attrs_in, dict):
            raise OutboxRowError(f"{shape.entities_column}[{i}].updatedAttributes must be an object")
        attrs = _outbox_attributes(attrs_in, f"{shape.entities_column}[{i}]")
        entities.append(
            {
                "entityType": str(ent["entityType"]),
                "entityId": str(ent["entityId"]),
                "updatedAttributes": attrs,
            }
        )
    return {
        "eventHeader": {
            "uuid": event_uuid(f"{change.position}:{row.get('id')}"),
            "eventName": name,
            "createdDate": change.commit_ms,
            "savedDate": saved_ms,
            "eventType": event_type if isinstance(event_type, str) else None,
        },
        "eventBody": {"entities": entities},
        "sourceMetadata": {"table": shape.table, "operation": "OUTBOX", "timestamp": change.commit_ms},
    }


def _outbox_attributes(given: dict[str, Any], where: str) -> dict[str, str | None]:
    """The application's attributes: top-level keys as written (they are attribute names the
    application chose, dots included), nested objects flattened like JSON columns."""
    out: dict[str, str | None] = {}
    for name, value in given.items():
        for key, val in flatten_json(str(name), value):
            if key in out:
                raise OutboxRowError(
                    f"{where}.updatedAttributes gives key {key!r} twice (a key with dots and a nested "
                    "object naming the same path); write it once"
                )
            out[key] = val
    return out


def event_key(event: Mapping[str, Any]) -> bytes:
    """Kafka key: the first entity's id (one entity's events stay in one partition, in order)."""
    return event["eventBody"]["entities"][0]["entityId"].encode()
