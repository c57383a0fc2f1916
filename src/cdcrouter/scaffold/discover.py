"""What ``cdcrouter init`` learns about the tables: entity type and id, JSON columns, and what
capture cannot take as it is. The facts come from the capture engine's own catalogue checks
(:mod:`cdcrouter.capture.source`), so init warns about exactly what ``capture run`` would refuse."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import psycopg
from pydantic import ValidationError

from cdcrouter.capture import source
from cdcrouter.capture.domain import SAMPLE_OUTBOX, SAMPLE_TABLES, domain_ddl
from cdcrouter.capture.pipeline import _camel, pipeline_from_dict
from cdcrouter.config.connections import Connections, PostgresSettings
from cdcrouter.errors import ConfigError

_PIPELINE_IDENT = re.compile(r"^[a-z_][a-z0-9_$]*$")  # what pipeline.yaml accepts as a table name


@dataclass
class TableFacts:
    """One table as pipeline.yaml will describe it."""

    name: str
    entity_type: str
    entity_id: tuple[str, ...]  # the primary key; empty: none (the table is left out)
    json_columns: tuple[str, ...] = ()
    exclude: dict[str, str] = field(default_factory=dict)  # column -> its unsupported type
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # fine as it is, but worth knowing
    events: dict[str, str] | None = None

    @property
    def capturable(self) -> bool:
        return bool(self.entity_id)


@dataclass
class Scaffold:
    """Everything the generated files say."""

    schema: str
    tables: list[TableFacts]
    connections: Connections  # where the files' cdcrouter.yaml points (secrets become ${ENV})
    source: str  # where the tables came from, without secrets
    outbox: str | None = None
    skipped: list[str] = field(default_factory=list)  # tables pipeline.yaml cannot name

    @property
    def captured(self) -> list[TableFacts]:
        return [t for t in self.tables if t.capturable]


def postgres_from_dsn(dsn: str, base: PostgresSettings) -> PostgresSettings:
    """A libpq DSN (URI or key=value) as settings; keys it leaves out come from ``base``."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        # the parser's message may quote the DSN, password included: do not repeat it
        raise ConfigError(
            "the DSN is not a valid PostgreSQL connection string",
            hint="use postgresql://USER@HOST:PORT/DBNAME (password from PGPASSWORD) or "
            "'host=H port=P dbname=D user=U'",
        ) from None
    known = {k: v for k, v in parts.items() if k in PostgresSettings.model_fields and v is not None}
    try:
        return PostgresSettings.model_validate({**dict(base), **known})
    except ValidationError:
        raise ConfigError(
            f"the DSN's port {known.get('port')!r} is not a number", hint="e.g. postgresql://u@h:5432/db"
        ) from None


def list_tables(conn: psycopg.Connection, schema: str) -> list[str]:
    """Ordinary and partitioned tables of ``schema``; partitions are captured via their root."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1",
        (schema,),
    ).fetchall()
    return [r[0] for r in rows]


def _choose(available: list[str], wanted: list[str] | None, schema: str) -> list[str]:
    if not available:
        raise ConfigError(
            f"schema {schema} has no tables", hint="pass --schema with the schema of your tables"
        )
    if not wanted:
        return available
    missing = [t for t in wanted if t not in available]
    if missing:
        raise ConfigError(
            f"no table {', '.join(missing)} in schema {schema} (partitions are named by their root table)",
            hint=f"tables of {schema}: {', '.join(available)}",
        )
    return list(dict.fromkeys(wanted))


def from_postgres(
    pg: PostgresSettings, conns: Connections, schema: str = "public", tables: list[str] | None = None
) -> Scaffold:
    """Inspect ``schema`` (or the ``tables`` of it) on the server ``pg`` describes."""
    conn = source.connect_sql(pg)
    try:
        with source.pg_errors("cannot read the catalogue", pg):
            names = _choose(list_tables(conn, schema), tables, schema)
            usable = [n for n in names if _PIPELINE_IDENT.match(n) and len(n) <= 63]
            infos = source.inspect_tables(conn, schema, usable)
            storages = source.inspect_storage(conn, schema, usable)
    finally:
        conn.close()
    skipped = [n for n in names if n not in usable]
    conns = conns.model_copy(update={"postgres": pg})
    if not usable:
        return Scaffold(schema, [], conns, pg.redacted(), skipped=skipped)
    # the identity problems capture would report with replica_identity: default, i.e. before it
    # sets REPLICA IDENTITY FULL itself (the generated pipeline's setting)
    probe = pipeline_from_dict(
        {"schema": schema, "replication": {"replica_identity": "default"}, "tables": {n: {} for n in usable}}
    )
    problems = source.identity_problems(probe, storages)
    facts = [_facts(infos[n], [s for s in storages if s.table == n], problems) for n in usable]
    return Scaffold(schema, facts, conns, pg.redacted(), skipped=skipped)


def _facts(
    info: source.TableInfo, storages: list[source.Storage], problems: list[tuple[str, str]]
) -> TableFacts:
    t = TableFacts(
        name=info.name,
        entity_type=_camel(info.name),
        entity_id=info.primary_key,
        json_columns=tuple(c.name for c in info.columns if c.kind == "json"),
        exclude={c.name: c.type_name for c in info.columns if c.kind is None},
    )
    if not info.primary_key:
        t.warnings.append(
            "no primary key, so its events would have no entity id; left out until you either add a "
            f"PRIMARY KEY to {info.name}, or set entity_id: <columns that identify a row> (keep "
            "replication.replica_identity: full so DELETEs carry them)"
        )
    if info.partitioned:
        parts = [s.name for s in storages if s.is_partition]
        t.notes.append(
            f"partitioned table: captured via its root (partitions: {', '.join(parts) or 'none yet'}); "
            "fine as it is, changes of every partition arrive as this table's events"
        )
    if info.generated:
        t.warnings.append(
            f"generated columns ({', '.join(info.generated)}) are not captured: logical replication "
            "does not send them"
        )
    for col, type_name in t.exclude.items():
        t.warnings.append(f"column {col} has type {type_name}, which capture does not support: excluded")
    for st in storages:
        if st.replica_identity == "i" and st.usable:
            t.warnings.append(
                f"{st.label} has REPLICA IDENTITY USING INDEX: capture replaces it with FULL "
                "(replication.replica_identity: full; the capture user must own the table)"
            )
    if info.primary_key:  # without one, the entity id warning above says it all
        labels = {s.label for s in storages}
        for problem, _fix in problems:
            if any(problem.startswith(label + " ") for label in labels):
                t.warnings.append(
                    f"{problem}: capture sets REPLICA IDENTITY FULL itself (replication.replica_identity: "
                    "full), which needs the capture user to own the table (or run that ALTER TABLE yourself)"
                )
    return t


_DDL_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", re.S)
_DDL_COLUMN = re.compile(r"^\s+(\w+)\s+(\w+)(.*?)(?:,|$)", re.M)


def from_sample_domain(conns: Connections) -> Scaffold:
    """The sample domain (the demo's tables), read from the DDL the demo applies."""
    facts: list[TableFacts] = []
    for name, body in _DDL_TABLE.findall(domain_ddl()):
        spec = SAMPLE_TABLES.get(name)
        if spec is None:
            continue
        cols = _DDL_COLUMN.findall(body)
        events = spec.get("events")
        facts.append(
            TableFacts(
                name=name,
                entity_type=str(spec.get("entity_type") or _camel(name)),
                entity_id=tuple(c for c, _t, rest in cols if "PRIMARY KEY" in rest),
                json_columns=tuple(c for c, typ, _r in cols if typ in ("json", "jsonb")),
                events=dict(events) if isinstance(events, dict) else None,
            )
        )
    return Scaffold(
        "public", facts, conns, "the sample domain (cdcrouter demo)", outbox=SAMPLE_OUTBOX["table"]
    )
