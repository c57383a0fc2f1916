"""The Debezium engine: connector configs (Kafka Connect, Confluent Cloud) and the normalising stage.

Debezium writes one topic per table (``<prefix>.<schema>.<table>``) in its own envelope. The
normalising stage consumes those topics (read_committed), turns each record back into a
:class:`RowChange` in PostgreSQL's text form and calls the SAME :func:`normalize_row` as the
embedded engine, then produces to the raw topic in a Kafka transaction that also commits its
consumer offsets (consume-transform-produce, exactly once). ``docs/capture.md`` explains why a
stage rather than SMTs.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from typing import Any

import httpx
import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from cdcrouter.capture import source
from cdcrouter.capture.canonical import date_from_epoch_days, timestamp_from_epoch_us
from cdcrouter.capture.normalize import (
    UNCHANGED,
    OutboxRowError,
    OutboxShape,
    RowChange,
    TableShape,
    Value,
    event_key,
    normalize_outbox,
    normalize_row,
)
from cdcrouter.capture.pipeline import Pipeline
from cdcrouter.capture.sink import AvroEncoder, ensure_topics, register_raw_schema
from cdcrouter.config.connections import Connections, PostgresSettings
from cdcrouter.errors import CaptureError, DeployError

CONNECTOR_CLASS = "io.debezium.connector.postgresql.PostgresConnector"
UNAVAILABLE = "__debezium_unavailable_value"


def connector_name(pipeline: Pipeline) -> str:
    return f"cdcrouter-{pipeline.replication.slot.replace('_', '-')}"


def topic_prefix(pipeline: Pipeline) -> str:
    return f"cdcrouter_{pipeline.replication.slot}"


def debezium_slot(pipeline: Pipeline) -> str:
    return f"{pipeline.replication.slot}_dbz"


def table_topics(pipeline: Pipeline) -> list[str]:
    return [f"{topic_prefix(pipeline)}.{pipeline.schema}.{t}" for t in pipeline.captured_tables()]


def _common(pipeline: Pipeline) -> dict[str, str]:
    """Settings both targets share: what to read and how values are represented."""
    common = {
        "plugin.name": "pgoutput",
        "slot.name": debezium_slot(pipeline),
        "publication.name": pipeline.replication.publication,
        "publication.autocreate.mode": "disabled",  # cdcrouter manages the publication (same as embedded)
        "topic.prefix": topic_prefix(pipeline),
        "table.include.list": ",".join(f"{pipeline.schema}.{t}" for t in pipeline.captured_tables()),
        "snapshot.mode": "initial" if pipeline.replication.snapshot == "initial" else "no_data",
        "heartbeat.interval.ms": str(int(pipeline.heartbeat_interval_s * 1000)),
        # value representations the normalising stage maps back to PostgreSQL's text form
        "decimal.handling.mode": "string",
        "binary.handling.mode": "hex",
        "interval.handling.mode": "string",
        "time.precision.mode": "adaptive_time_microseconds",
        "tombstones.on.delete": "false",
        "tasks.max": "1",
    }
    excluded = [
        f"{pipeline.schema}.{t}.{c}" for t, spec in pipeline.tables.items() for c in spec.exclude_columns
    ]
    if excluded:
        common["column.exclude.list"] = ",".join(excluded)
    return common


def render_connect_config(
    pipeline: Pipeline, conns: Connections, *, inline_secrets: bool = False
) -> dict[str, str]:
    """Debezium PostgreSQL connector config for Kafka Connect (PUT /connectors/{name}/config).

    The password is ``${env:CDCROUTER_POSTGRES__PASSWORD}`` (Kafka's EnvVarConfigProvider; the
    worker needs ``config.providers=env``) unless ``inline_secrets`` (deploy to a worker without
    config providers: the secret then travels only in the REST request, never into a file).
    """
    pg = _single_host(conns)
    password = (
        pg.password.get_secret_value()
        if inline_secrets and pg.password
        else "${env:CDCROUTER_POSTGRES__PASSWORD}"
    )
    return {
        "connector.class": CONNECTOR_CLASS,
        "database.hostname": pg.host,
        "database.port": str(pg.port),
        "database.user": pg.user,
        "database.password": password,
        "database.dbname": pg.dbname,
        "database.sslmode": pg.sslmode,
        **_common(pipeline),
        # Debezium's per-table topics are internal to the normalising stage: plain JSON keeps them
        # independent of the registry (Apicurio 3.3 rejects some Debezium Avro schemas: 42201).
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": "false",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        # each value carries its schema, with every column's PostgreSQL type: the normalising stage
        # follows an ALTER COLUMN TYPE from the first record written after it (RecordTypes)
        "value.converter.schemas.enable": "true",
        "column.propagate.source.type": ".*",
        "topic.creation.default.partitions": "1",  # one partition per table keeps commit order
        "topic.creation.default.replication.factor": str(pipeline.raw_topic.replication_factor),
        "exactly.once.support": "required",
        "transaction.boundary": "poll",
        # Debezium 3.4 creates a failover slot (PostgreSQL 17+ primary) only when asked
        **({"slot.failover": "true"} if pipeline.replication.failover else {}),
    }


def _single_host(conns: Connections) -> PostgresSettings:
    """Debezium's ``database.hostname``/``port`` name one server: a host list (the embedded engine's
    way to follow a promotion) would become an unusable address, so it is refused here."""
    pg = conns.postgres
    if pg.multi_host:
        raise CaptureError(
            f"connections.postgres lists several hosts ({pg.redacted()}); the Debezium connector "
            "connects to one",
            hint="give the connector one endpoint that always leads to the primary (set "
            "CDCROUTER_POSTGRES__HOST/__PORT to it for `connector render|deploy`), or use the embedded "
            "engine (`cdcrouter capture run`), which follows a promotion across the listed hosts",
        )
    return pg


def render_confluent_cloud_config(pipeline: Pipeline, conns: Connections) -> dict[str, str]:
    """Confluent Cloud managed "PostgresCdcSourceV2" connector config; secrets as ${ENV} placeholders."""
    pg = _single_host(conns)
    common = _common(pipeline)
    for key in (
        "decimal.handling.mode",
        "binary.handling.mode",
        "interval.handling.mode",
        "time.precision.mode",
    ):
        common.pop(key)  # set below with the managed connector's names where they differ
    return {
        "name": connector_name(pipeline),
        "connector.class": "PostgresCdcSourceV2",
        "kafka.auth.mode": "KAFKA_API_KEY",
        "kafka.api.key": "${KAFKA_API_KEY}",
        "kafka.api.secret": "${KAFKA_API_SECRET}",
        "database.hostname": pg.host,
        "database.port": str(pg.port),
        "database.user": pg.user,
        "database.password": "${POSTGRES_PASSWORD}",
        "database.dbname": pg.dbname,
        "database.sslmode": "require" if pg.sslmode == "disable" else pg.sslmode,
        **common,
        "output.data.format": "JSON",
        "output.key.format": "JSON",
        "after.state.only": "false",
        "decimal.handling.mode": "string",
        "binary.handling.mode": "hex",
        "interval.handling.mode": "string",
        "time.precision.mode": "adaptive_time_microseconds",
    }


class ConnectClient:
    """The few Kafka Connect REST calls deploy needs, with errors that say what to do."""

    def __init__(self, conns: Connections, timeout: float = 30.0) -> None:
        self.url = conns.connect.url.rstrip("/")
        self.client = httpx.Client(auth=conns.connect.auth(), timeout=timeout)

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self.client.request(method, f"{self.url}{path}", **kw)
        except httpx.HTTPError as exc:
            raise DeployError(
                f"cannot reach Kafka Connect at {self.url}: {exc}",
                hint="is it running? `cdcrouter stack up --only connect`, or check connections.connect.url",
            ) from exc
        if resp.status_code == 404:
            return None
        if resp.status_code >= 300:
            raise DeployError(
                f"Kafka Connect {method} {path}: HTTP {resp.status_code} {resp.text[:500]}",
                hint="check the connector config (`cdcrouter connector render`) and the worker log",
            )
        return resp.json() if resp.content else {}

    def put_config(self, name: str, config: dict[str, str]) -> Any:
        return self._call("PUT", f"/connectors/{name}/config", json=config)

    def status(self, name: str) -> Any:
        return self._call("GET", f"/connectors/{name}/status")

    def delete(self, name: str) -> Any:
        return self._call("DELETE", f"/connectors/{name}")


def prepare_source(pipeline: Pipeline, conns: Connections) -> dict[str, source.TableInfo]:
    """Same checks and publication as the embedded engine, so both read the same changes."""
    conn = source.connect_sql(conns.postgres)
    try:
        with source.pg_errors("cannot prepare capture", conns.postgres):
            source.check_wal_level(conn)
            source.check_failover(conn, pipeline.replication.failover)
            infos = source.inspect_tables(conn, pipeline.schema, pipeline.captured_tables())
            source.check_tables(pipeline, infos)
            source.ensure_publication(conn, pipeline, infos)
        return infos
    finally:
        conn.close()


def deploy(pipeline: Pipeline, conns: Connections, *, inline_secrets: bool = True) -> dict[str, Any]:
    prepare_source(pipeline, conns)
    name = connector_name(pipeline)
    ConnectClient(conns).put_config(
        name, render_connect_config(pipeline, conns, inline_secrets=inline_secrets)
    )
    return {"connector": name, "topics": table_topics(pipeline)}


def undeploy(pipeline: Pipeline, conns: Connections, *, drop_slot: bool = True) -> None:
    """Delete the connector and (by default) its replication slot, so it pins no WAL."""
    ConnectClient(conns).delete(connector_name(pipeline))
    if drop_slot:
        conn = source.connect_sql(conns.postgres)
        try:
            for _ in range(100):  # the task lets go of the slot shortly after the delete
                row = conn.execute(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (debezium_slot(pipeline),)
                ).fetchone()
                if row is None or not row[0]:
                    break
                time.sleep(0.1)
            source.drop_slot(conn, debezium_slot(pipeline))
        finally:
            conn.close()


def wait_running(conns: Connections, name: str, timeout_s: float = 90.0) -> dict[str, Any]:
    client = ConnectClient(conns)
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = client.status(name)
        tasks = (last or {}).get("tasks") or []
        if tasks and all(t.get("state") == "RUNNING" for t in tasks):
            return last
        if any(t.get("state") == "FAILED" for t in tasks):
            trace = tasks[0].get("trace", "")[:800]
            raise DeployError(f"connector {name} failed: {trace}", hint="see the Connect worker log")
        time.sleep(0.5)
    raise DeployError(
        f"connector {name} not RUNNING after {timeout_s:.0f}s: {last}", hint="see the worker log"
    )


# --- Debezium record -> RowChange ------------------------------------------------------------


# The numbers Debezium sends for PostgreSQL's infinity (from the JDBC driver's sentinels), all
# outside PostgreSQL's own range, so they stand for nothing else (docs/capture.md).
_DEBEZIUM_INFINITY: dict[tuple[str, int], str] = {
    ("timestamp without time zone", 9223372036825200000): "infinity",
    ("timestamp without time zone", -9223372036832400000): "-infinity",
    ("date", -2147472692): "infinity",
    ("date", -2147472691): "-infinity",
}


# timestamp without time zone, with its precision when declared: with
# time.precision.mode=adaptive_time_microseconds, Debezium sends precision 0-3 as
# io.debezium.time.Timestamp (milliseconds) and 4-6 (the default) as MicroTimestamp
_TIMESTAMP = re.compile(r"timestamp(?:\((\d)\))? without time zone")
_MILLIS_TIMESTAMP = "io.debezium.time.Timestamp"


def _pg_text(value: Any, type_name: str) -> Value:
    """A Debezium value (with the modes set in :func:`_common`) in PostgreSQL's text form."""
    if value is None:
        return None
    if value == UNAVAILABLE:
        return UNCHANGED
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int) and (m := _TIMESTAMP.fullmatch(type_name)):
        if m[1] is not None and int(m[1]) <= 3:  # io.debezium.time.Timestamp: milliseconds
            value *= 1000
        inf = _DEBEZIUM_INFINITY.get(("timestamp without time zone", value))
        return inf if inf is not None else timestamp_from_epoch_us(value)  # any year, BC included
    if isinstance(value, int) and (type_name, value) in _DEBEZIUM_INFINITY:
        return _DEBEZIUM_INFINITY[type_name, value]
    if type_name == "date" and isinstance(value, int):
        return date_from_epoch_days(value)  # any year, BC included
    if type_name.startswith("time") and not type_name.startswith("timestamp") and isinstance(value, int):
        secs, micros = divmod(value, 1_000_000)
        text = f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"
        return text + (f".{micros:06d}".rstrip("0") if micros else "")
    if type_name == "bytea" and isinstance(value, str):
        return "\\x" + value.lower()
    if isinstance(value, float):
        return repr(value) if value == value and value not in (float("inf"), float("-inf")) else str(value)
    return str(value)


def row_change(
    envelope: dict[str, Any], key_fields: list[str], types: dict[str, str], full_identity: bool
) -> RowChange | None:
    op = {"c": "INSERT", "u": "UPDATE", "d": "DELETE", "r": "SNAPSHOT"}.get(envelope.get("op") or "")
    if op is None:
        return None
    src = envelope["source"]
    before, after = envelope.get("before"), envelope.get("after")

    def conv(row: dict[str, Any] | None) -> dict[str, Value] | None:
        if row is None:
            return None
        return {c: _pg_text(v, types.get(c, "text")) for c, v in row.items()}

    old = conv(before)
    if old is not None and not full_identity:
        old = {k: old[k] for k in key_fields if k in old}
    lsn = int(src.get("lsn") or 0)
    position = f"{lsn:X}:{src['table']}" if op != "SNAPSHOT" else f"snapshot:dbz:{src['table']}"
    return RowChange(op, conv(after), old, position, int(src.get("ts_ms") or 0))


SOURCE_TYPE = "__debezium.source.column.type"  # the column's PostgreSQL type, in a field's parameters
_PAYLOAD = b',"payload":'


def split_record(value: bytes) -> tuple[bytes | None, dict[str, Any]]:
    """A JsonConverter value: its schema's text (None without one) and its parsed envelope.

    The schema, the same text for every record of one table shape, is cut off unparsed (the
    converter writes ``{"schema":...,"payload":...}`` in that order); a value that is not of that
    form is parsed whole."""
    if value.startswith(b'{"schema":'):
        at = value.find(_PAYLOAD)
        if at > 0:
            try:
                return value[10:at], orjson.loads(value[at + len(_PAYLOAD) : -1])
            except orjson.JSONDecodeError:
                pass  # a default value holding the separator: parse it all
        doc = orjson.loads(value)
        return orjson.dumps(doc["schema"]), doc["payload"]
    return None, orjson.loads(value)


def column_source_types(schema: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    """Each column's PostgreSQL type name as Debezium's record schema states it
    (``column.propagate.source.type``), with the field's logical type (e.g.
    ``io.debezium.time.Timestamp``); columns without a type name are left out."""
    out: dict[str, tuple[str, str | None]] = {}
    for part in schema.get("fields") or ():
        if part.get("field") not in ("before", "after"):
            continue
        for f in part.get("fields") or ():
            name = (f.get("parameters") or {}).get(SOURCE_TYPE)
            if name:
                out[f["field"]] = (name, f.get("name"))
    return out


class RecordTypes:
    """The column types of the records being normalised, from the schema each record carries.

    An ALTER COLUMN TYPE while Debezium runs changes the schema of the records written after it:
    those are canonicalised by the new type, the records before it by the old one. The start-up
    types stand for records without a schema (a connector deployed without value schemas, or
    Confluent Cloud's JSON output)."""

    def __init__(self, conns: Connections, schema: str) -> None:
        self.conns = conns
        self.schema = schema
        self._by_name: dict[str, tuple[str, str]] = {}  # Debezium's type name -> (PostgreSQL's name, kind)
        self._shapes: dict[tuple[str, bytes], tuple[TableShape | OutboxShape, dict[str, str]]] = {}

    def shape(
        self, table: str, schema_text: bytes | None, start: tuple[TableShape | OutboxShape, dict[str, str]]
    ) -> tuple[TableShape | OutboxShape, dict[str, str]]:
        if schema_text is None:
            return start
        key = (table, schema_text)
        found = self._shapes.get(key)
        if found is None:
            found = self._shapes[key] = self._follow(orjson.loads(schema_text), start)
        return found

    def _follow(
        self, schema: dict[str, Any], start: tuple[TableShape | OutboxShape, dict[str, str]]
    ) -> tuple[TableShape | OutboxShape, dict[str, str]]:
        shape, types = start
        stated = column_source_types(schema)
        self._resolve([t for t, _logical in stated.values() if t not in self._by_name])
        now = {c: self._by_name[t] for c, (t, _logical) in stated.items() if t in self._by_name}
        named = {c: name for c, (name, _kind) in now.items()}
        for c, (_t, logical) in stated.items():
            if logical == _MILLIS_TIMESTAMP and named.get(c) == "timestamp without time zone":
                named[c] = "timestamp(3) without time zone"  # its values are in milliseconds
        types = {**types, **named}
        if isinstance(shape, TableShape):
            kinds = {**shape.kinds, **{c: kind for c, (_name, kind) in now.items()}}
            shape = dataclasses.replace(shape, kinds=kinds)
        return shape, types

    def _resolve(self, names: list[str]) -> None:
        """PostgreSQL's name and kind of each type Debezium names (its ``typname``, any case)."""
        if not names:
            return
        conn = source.connect_sql(self.conns.postgres)
        try:
            with source.pg_errors("cannot look up a changed column type", self.conns.postgres):
                for name in set(names):
                    row = conn.execute(
                        """
                        SELECT t.oid::int FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                        WHERE t.typname IN (%s, lower(%s))
                        ORDER BY t.typname = %s DESC, n.nspname = %s DESC, n.nspname = 'pg_catalog' DESC
                        LIMIT 1
                        """,
                        (name, name, name, self.schema),
                    ).fetchone()
                    if row is None:
                        continue  # not known here: the start-up type stands
                    (type_name, kind) = source.type_kinds(conn, [row[0]])[row[0]]
                    self._by_name[name] = (type_name, kind or "plain")
        finally:
            conn.close()


class Normalizer:
    """Debezium per-table topics -> raw-business-events, exactly once (offsets in the txn)."""

    def __init__(self, pipeline: Pipeline, conns: Connections, *, group: str | None = None) -> None:
        self.pipeline = pipeline
        self.conns = conns
        self.group = group or f"cdcrouter-normalize-{pipeline.replication.slot}"
        self.events = 0
        self.ready = threading.Event()

    def _shapes(self) -> dict[str, tuple[TableShape | OutboxShape, list[str], dict[str, str]]]:
        p = self.pipeline
        conn = source.connect_sql(self.conns.postgres)
        try:
            infos = source.inspect_tables(conn, p.schema, p.captured_tables())
        finally:
            conn.close()
        out: dict[str, tuple[TableShape | OutboxShape, list[str], dict[str, str]]] = {}
        for table, info in infos.items():
            types = {c.name: c.type_name for c in info.columns}
            if p.outbox and table == p.outbox.table:
                c = p.outbox.columns
                out[table] = (
                    OutboxShape(table, c.event_name, c.event_type, c.entities),
                    list(info.primary_key),
                    types,
                )
                continue
            kinds = {c.name: c.kind or "plain" for c in info.columns}
            names = {op: p.event_name(table, op) for op in ("INSERT", "UPDATE", "DELETE", "SNAPSHOT")}
            ids = source.id_columns(p, info)
            # generated columns: in Debezium's snapshot rows, never in its stream (docs/capture.md)
            excluded = frozenset(p.tables[table].exclude_columns) | frozenset(info.generated)
            shape = TableShape(
                table, p.entity_type(table), ids, kinds, names, p.tables[table].event_type, excluded
            )
            out[table] = (shape, list(info.primary_key), types)
        return out

    def run(self, stop: threading.Event | None = None, duration_s: float | None = None) -> int:
        stop = stop or threading.Event()
        if duration_s is not None:
            threading.Timer(duration_s, stop.set).start()
        p, conns = self.pipeline, self.conns
        shapes = self._shapes()
        record_types = RecordTypes(conns, p.schema)
        full = p.replication.replica_identity == "full"
        ensure_topics(conns, p.raw_topic)
        enc = AvroEncoder(register_raw_schema(conns, p.raw_topic.name))
        consumer = Consumer(
            {
                **conns.kafka.to_librdkafka(),
                "group.id": self.group,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "topic.metadata.refresh.interval.ms": 2000,
                "log_level": 3,
            }
        )
        producer = Producer(
            {
                **conns.kafka.producer_conf(),
                "transactional.id": f"{self.group}-txn",
                "linger.ms": 5,
                "queue.buffering.max.messages": 2_000_000,
            }
        )
        try:
            producer.init_transactions(60)
            prefix = topic_prefix(p).replace(".", r"\.")
            tables = "|".join(p.captured_tables())
            consumer.subscribe([f"^{prefix}\\.{p.schema}\\.({tables})$"])
            self.ready.set()
            while not stop.is_set():
                # Block for the first record only, then take what is already queued: consume(n, t)
                # would wait up to t for n records and add that wait to every change's latency.
                first = consumer.poll(0.05)
                if first is None:
                    continue
                msgs = [first, *consumer.consume(4999, 0)]
                producer.begin_transaction()
                for m in msgs:
                    if m.error():
                        if m.error().code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._PARTITION_EOF):
                            continue  # Connect creates a table's topic with its first record
                        raise CaptureError(f"reading Debezium topics: {m.error().str()}", hint="check Kafka")
                    if m.value() is None:
                        continue
                    schema_text, envelope = split_record(m.value())
                    if envelope is None:
                        continue  # a tombstone with a schema
                    table = m.topic().rsplit(".", 1)[1]
                    start_shape, keys, start_types = shapes[table]
                    shape, types = record_types.shape(table, schema_text, (start_shape, start_types))
                    change = row_change(envelope, keys, types, full or isinstance(shape, OutboxShape))
                    if change is None:
                        continue
                    now = time.time_ns() // 1_000_000
                    if isinstance(shape, TableShape):
                        event = normalize_row(change, shape, now)
                    elif change.operation != "INSERT":
                        continue
                    else:
                        try:
                            event = normalize_outbox(change, shape, now)
                        except OutboxRowError as exc:
                            producer.produce(
                                p.raw_topic.dlq_topic,
                                json.dumps(
                                    {"table": table, "error": str(exc), "row": change.new}, default=str
                                ),
                            )
                            continue
                    producer.produce(p.raw_topic.name, enc.encode(event), event_key(event))
                    self.events += 1
                producer.send_offsets_to_transaction(
                    consumer.position(consumer.assignment()), consumer.consumer_group_metadata()
                )
                producer.commit_transaction()
        except KafkaException as exc:
            raise CaptureError(
                f"normalising stage failed: {exc.args[0].str()}",
                hint="restart it: it resumes from its committed consumer offsets",
            ) from exc
        finally:
            consumer.close()
            producer.flush(10)
        return self.events


__all__ = [
    "ConnectClient",
    "Normalizer",
    "connector_name",
    "debezium_slot",
    "deploy",
    "render_confluent_cloud_config",
    "render_connect_config",
    "row_change",
    "table_topics",
    "topic_prefix",
]
