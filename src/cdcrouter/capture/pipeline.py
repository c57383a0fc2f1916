"""``pipeline.yaml``: which tables become which business events, and where they go.

The file is read with ruamel.yaml's round-trip loader so every validation error points at
``file:line:column``; pydantic does the checking. Connections are *not* modelled here: a
``connections:`` section in the same file is handed to :func:`cdcrouter.config.load_connections`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cdcrouter.consumer._dlq import CAPTURE_SUFFIX
from cdcrouter.errors import ConfigError
from cdcrouter.naming import DEFAULT_RAW_TOPIC
from cdcrouter.transactions import DEFAULT_CAPTURE_TIMEOUT_MS, DEFAULT_ROUTER_TIMEOUT_MS, MIN_TIMEOUT_MS

RAW_MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # rows with a few MB of text fit; Kafka's default is ~1 MB
_IDENT = re.compile(r"^[a-z_][a-z0-9_$]*$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _ident(value: str, what: str) -> str:
    if not _IDENT.match(value) or len(value) > 63:
        raise ValueError(
            f"{what} {value!r} must be a lower-case PostgreSQL identifier "
            "(letters, digits, _; at most 63 characters)"
        )
    return value


def _camel(name: str) -> str:
    """``loan_payments`` -> ``LoanPayment``: the default entity type of a table."""
    words = [w for w in name.split("_") if w and w != "entities"]
    if words and words[-1].endswith("s") and not words[-1].endswith("ss"):
        words[-1] = words[-1][:-1]
    return "".join(w[:1].upper() + w[1:] for w in words) or name


class RawTopic(_Model):
    """The topic every business event lands on, created explicitly (auto-create is off)."""

    name: str = DEFAULT_RAW_TOPIC
    partitions: int = Field(default=3, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1, le=32)
    retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=-1)
    # the topic's max.message.bytes when capture creates it; the producer is sized from the
    # topic's actual setting, and a change that still does not fit is dead-lettered
    max_message_bytes: int = Field(default=RAW_MAX_MESSAGE_BYTES, ge=2048, le=1_000_000_000)

    @field_validator("name")
    @classmethod
    def _topic_name(cls, v: str) -> str:
        if not _TOPIC.match(v):
            raise ValueError(f"topic name {v!r} may use only letters, digits, '.', '_' and '-'")
        return v

    @property
    def offsets_topic(self) -> str:
        """Compacted topic holding the last committed source position, written in the same txn."""
        return f"{self.name}.capture-offsets"

    @property
    def dlq_topic(self) -> str:
        """Changes that cannot become events (bad outbox rows, records too large for the raw
        topic) land here with the reason, never dropped."""
        return f"{self.name}{CAPTURE_SUFFIX}"


class Replication(_Model):
    slot: str = "cdcrouter_slot"
    publication: str = "cdcrouter_pub"
    snapshot: Literal["initial", "never"] = "initial"
    # rows per snapshot chunk: one SELECT, one Kafka transaction (docs/capture.md, Snapshots)
    snapshot_chunk_size: int = Field(default=10_000, ge=1, le=1_000_000)
    # full: cdcrouter sets REPLICA IDENTITY FULL so UPDATEs report exactly the changed columns and
    # DELETEs carry the old row. default: UPDATEs report every column PostgreSQL sends.
    replica_identity: Literal["full", "default"] = "full"
    # PostgreSQL 17+: create the slot as a failover slot, synchronised to standbys.
    failover: bool = False

    @field_validator("slot", "publication")
    @classmethod
    def _names(cls, v: str) -> str:
        return _ident(v, "name")


class DisasterRecovery(_Model):
    """``confirm_after_mirror``: capture confirms the slot only up to the position whose events
    region ``region`` holds (MirrorMaker 2 flow ``source_alias`` -> region), so losing region A's
    Kafka loses no change PostgreSQL has released (docs/disaster-recovery.md). Off by default:
    the slot then moves as soon as region A's Kafka has committed."""

    confirm_after_mirror: bool = False
    region: str = "b"
    source_alias: str = "a"  # MM2's alias of region A: its offsets live in mm2-offsets.<alias>.internal


class Batching(_Model):
    """Many PostgreSQL transactions go into one Kafka transaction, bounded by size and time."""

    max_events: int = Field(default=20_000, ge=1)
    max_ms: int = Field(default=50, ge=1, le=60_000)
    # a PostgreSQL transaction still streaming after this long in one Kafka transaction is committed
    # in parts (the producer's transaction.timeout.ms is 60 s: the broker would abort it)
    max_open_s: float = Field(default=20.0, gt=0, le=50)


class Transactions(_Model):
    """Kafka ``transaction.timeout.ms`` of capture's and the router's producers: how long a crashed
    process's open transaction can hold read_committed readers back (cdcrouter/transactions.py)."""

    capture_timeout_ms: int = Field(default=DEFAULT_CAPTURE_TIMEOUT_MS, ge=MIN_TIMEOUT_MS)
    router_timeout_ms: int = Field(default=DEFAULT_ROUTER_TIMEOUT_MS, ge=MIN_TIMEOUT_MS)


class EventNames(_Model):
    insert: str | None = None
    update: str | None = None
    delete: str | None = None


class TableSpec(_Model):
    entity_type: str | None = None
    entity_id: str | list[str] | None = None  # default: the primary key
    events: EventNames = EventNames()
    event_type: str | None = None
    exclude_columns: list[str] = []
    row_filter: str | None = None  # SQL boolean expression pushed into the publication (PG 15+)


class OutboxColumns(_Model):
    event_name: str = "event_name"
    event_type: str = "event_type"
    entities: str = "entities"


class Outbox(_Model):
    table: str = "business_events"
    columns: OutboxColumns = OutboxColumns()

    @field_validator("table")
    @classmethod
    def _table(cls, v: str) -> str:
        return _ident(v, "outbox table")


class Pipeline(_Model):
    """A validated ``pipeline.yaml``. ``tables`` maps table name to its (resolved) spec."""

    schema_: str = Field(default="public", alias="schema")
    raw_topic: RawTopic = RawTopic()
    replication: Replication = Replication()
    batching: Batching = Batching()
    transactions: Transactions = Transactions()
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    tables: dict[str, TableSpec] = {}
    outbox: Outbox | None = None
    # fused mode: a filters.yaml routed in capture's own transactions (relative to this file)
    route: str | None = None
    dr: DisasterRecovery = DisasterRecovery()
    connections: dict[str, Any] | None = None  # read by cdcrouter.config, not here
    source_file: str | None = Field(default=None, exclude=True)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("schema_")
    @classmethod
    def _schema(cls, v: str) -> str:
        return _ident(v, "schema")

    @field_validator("tables")
    @classmethod
    def _table_names(cls, v: dict[str, TableSpec]) -> dict[str, TableSpec]:
        for name in v:
            _ident(name, "table")
        return v

    @model_validator(mode="after")
    def _something_to_capture(self) -> Pipeline:
        if not self.tables and self.outbox is None:
            raise ValueError("nothing to capture: list at least one table under `tables:` or an `outbox:`")
        if self.replication.replica_identity == "default":
            for name, spec in self.tables.items():
                if spec.row_filter:
                    raise ValueError(
                        f"tables.{name}.row_filter needs replication.replica_identity: full "
                        "(with the default identity PostgreSQL rejects UPDATEs on filtered tables "
                        "unless the filter uses only key columns)"
                    )
        if self.outbox and self.outbox.table in self.tables:
            raise ValueError(f"table {self.outbox.table!r} is both a captured table and the outbox")
        return self

    @property
    def schema(self) -> str:
        return self.schema_

    def entity_type(self, table: str) -> str:
        return self.tables[table].entity_type or _camel(table)

    def event_name(self, table: str, operation: str) -> str:
        """Event name for INSERT/UPDATE/DELETE (SNAPSHOT rows use the INSERT name)."""
        names = self.tables[table].events
        op = "insert" if operation == "SNAPSHOT" else operation.lower()
        explicit = getattr(names, op)
        if explicit:
            return explicit
        suffix = {"insert": "Created", "update": "Updated", "delete": "Deleted"}[op]
        return self.entity_type(table) + suffix

    def route_path(self) -> Path | None:
        """The ``route:`` filters file, relative to the pipeline file's directory (None: not fused)."""
        if not self.route:
            return None
        path = Path(self.route)
        if not path.is_absolute() and self.source_file and not self.source_file.startswith("<"):
            path = Path(self.source_file).parent / path
        return path

    def captured_tables(self) -> list[str]:
        return [*self.tables, *([self.outbox.table] if self.outbox else [])]


def pipeline_from_dict(data: dict[str, Any], source: str = "<dict>") -> Pipeline:
    """Validate an already-parsed pipeline document (used by tests and in-process callers)."""
    try:
        return Pipeline.model_validate({**data, "source_file": source})
    except ValidationError as exc:
        raise _config_error(exc, source, None) from exc


def load_pipeline(path: str | Path) -> Pipeline:
    """Read and validate ``pipeline.yaml``.

    Raises:
        ConfigError: the file is missing, not YAML, or invalid; the message has file:line:column.
    """
    from ruamel.yaml import YAML, YAMLError

    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"pipeline file {p} does not exist",
            hint="pass --pipeline FILE (see examples/pipeline.yaml)",
        )
    try:
        doc = YAML(typ="rt").load(p.read_text())
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark else str(p)
        raise ConfigError(
            f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}", hint="fix the YAML syntax"
        ) from exc
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{p}:1:1: a pipeline file must be a mapping", hint="see examples/pipeline.yaml")
    try:
        return Pipeline.model_validate({**_plain(doc), "source_file": str(p)})
    except ValidationError as exc:
        raise _config_error(exc, str(p), doc) from exc


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _position(doc: Any, loc: tuple[Any, ...]) -> tuple[int, int] | None:
    """Line/column (1-based) of the deepest YAML node on ``loc`` that exists in the document."""
    node, best = doc, None
    for part in loc:
        key = "schema" if part == "schema_" else part
        lc = getattr(node, "lc", None)
        if isinstance(node, dict) and key in node:
            if lc is not None:
                line, col = lc.key(key)
                best = (line + 1, col + 1)
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            if lc is not None:
                line, col = lc.item(key)
                best = (line + 1, col + 1)
            node = node[key]
        else:
            break
    if best is None and getattr(doc, "lc", None) is not None:
        best = (1, 1)
    return best


def _config_error(exc: ValidationError, source: str, doc: Any) -> ConfigError:
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if p not in ("function-after",))
        pos = _position(doc, loc) if doc is not None else None
        where = f"{source}:{pos[0]}:{pos[1]}" if pos else source
        path = ".".join("schema" if p == "schema_" else str(p) for p in loc) or "(document)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{where} {path}: {msg}")
    first, *rest = lines
    return ConfigError(
        first + "".join(f"\n  {line}" for line in rest),
        hint="fix the pipeline file; examples/pipeline.yaml shows every key",
    )
