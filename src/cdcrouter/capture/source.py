"""The PostgreSQL side of capture: catalog checks, publication, slot, snapshot, replication stream.

Ordinary SQL goes through psycopg 3; the replication protocol (CREATE_REPLICATION_SLOT with an
exported snapshot, START_REPLICATION, standby feedback) through psycopg2's
``LogicalReplicationConnection``, which psycopg 3 does not offer. Every psycopg error leaves this
module as a :class:`CaptureError` that says what to do.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import psycopg2
import psycopg2.extras
from psycopg import sql

from cdcrouter.capture.canonical import Kind
from cdcrouter.capture.pipeline import Pipeline
from cdcrouter.config.connections import PostgresSettings
from cdcrouter.errors import CaptureError

# Every session that produces text values runs with these, so snapshot rows and streamed
# changes print values identically (UTC timestamps, ISO dates, exact floats, hex bytea).
SESSION_OPTIONS = (
    "-c DateStyle=ISO,YMD -c TimeZone=UTC -c IntervalStyle=postgres "
    "-c extra_float_digits=1 -c bytea_output=hex"
)

_KIND_BY_OID: dict[int, Kind] = {
    16: "bool",
    114: "json",
    3802: "json",
    1184: "timestamptz",
    1114: "timestamp",
}
# bytea, uuid, macaddr, macaddr8: category U, but scalars whose text output is canonical
_PLAIN_U_OIDS = {17, 2950, 829, 774}
_PLAIN_CATEGORIES = set("BNSDTIVE")


def kind_of(base_oid: int, category: str, typtype: str) -> Kind | None:
    """How a column's text output is canonicalised; None when the type is not supported."""
    if base_oid in _KIND_BY_OID:
        return _KIND_BY_OID[base_oid]
    if base_oid in _PLAIN_U_OIDS or category in _PLAIN_CATEGORIES or typtype == "e":
        return "plain"
    return None


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_name: str
    kind: Kind | None
    is_pk: bool
    type_oid: int = 0  # the declared type (a domain's own oid), as pgoutput's Relation message names it


@dataclass(frozen=True, slots=True)
class TableInfo:
    name: str
    columns: tuple[Column, ...]  # the captured columns: generated columns are not among them
    replica_identity: str  # d, n, f, i
    generated: tuple[str, ...] = ()  # generated columns: pgoutput never sends them, so never captured
    partitioned: bool = False

    @property
    def primary_key(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.is_pk)


@contextlib.contextmanager
def pg_errors(what: str, pg: PostgresSettings) -> Iterator[None]:
    """Translate psycopg/psycopg2 errors into a CaptureError naming the server and a fix."""
    try:
        yield
    except (psycopg.OperationalError, psycopg2.OperationalError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "password authentication failed" in text or "no password supplied" in text:
            hint = "check the PostgreSQL user and password (CDCROUTER_POSTGRES__USER / __PASSWORD)"
        elif "does not exist" in text and "database" in text:
            hint = "check connections.postgres.dbname"
        elif "hot standby" in text or "read-only" in text or "not in recovery" in text:
            hint = (
                "no server in connections.postgres.host is a primary (a failover in progress?): promote "
                "the standby (`cdcrouter dr standby promote`, or your provider's failover); capture "
                "resumes on its own (docs/disaster-recovery.md)"
            )
        elif "Connection refused" in text or "could not connect" in text:
            hint = "is PostgreSQL running? `cdcrouter stack up --only postgres`, or check host/port"
        else:
            hint = "check the PostgreSQL server log and connections.postgres"
        raise CaptureError(f"{what} ({pg.redacted()}): {text}", hint=hint) from exc
    except (psycopg.Error, psycopg2.Error) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CaptureError(f"{what} ({pg.redacted()}): {text}", hint="see the PostgreSQL server log") from exc


def connect_sql(pg: PostgresSettings) -> psycopg.Connection:
    with pg_errors("cannot connect to PostgreSQL", pg):
        return psycopg.connect(
            pg.conninfo(options=SESSION_OPTIONS, application_name="cdcrouter-capture"),
            autocommit=True,
            connect_timeout=10,
        )


def inspect_tables(conn: psycopg.Connection, schema: str, tables: list[str]) -> dict[str, TableInfo]:
    """Columns, types, primary keys and replica identity of the captured tables."""
    rows = conn.execute(
        """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid::int,
               coalesce(bt.oid, t.oid)::int, coalesce(bt.typcategory, t.typcategory),
               coalesce(bt.typtype, t.typtype),
               coalesce(a.attnum = ANY (i.indkey), false), c.relreplident, a.attgenerated <> '',
               c.relkind = 'p'
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
        LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
        WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')
        ORDER BY c.relname, a.attnum
        """,
        (schema, tables),
    ).fetchall()
    cols: dict[str, list[Column]] = {}
    generated: dict[str, list[str]] = {}
    ident: dict[str, tuple[str, bool]] = {}
    for rel, col, type_name, type_oid, base_oid, category, typtype, is_pk, replident, is_gen, is_part in rows:
        cols.setdefault(rel, [])
        generated.setdefault(rel, [])
        if is_gen:
            generated[rel].append(col)
        else:
            cols[rel].append(Column(col, type_name, kind_of(base_oid, category, typtype), is_pk, type_oid))
        ident[rel] = (replident, is_part)
    return {
        name: TableInfo(name, tuple(c), ident[name][0], tuple(generated[name]), ident[name][1])
        for name, c in cols.items()
    }


def type_kinds(conn: psycopg.Connection, oids: list[int]) -> dict[int, tuple[str, Kind | None]]:
    """Name and canonical kind of each type oid (a Relation message's column types)."""
    rows = conn.execute(
        """
        SELECT t.oid::int, format_type(t.oid, NULL), coalesce(bt.oid, t.oid)::int,
               coalesce(bt.typcategory, t.typcategory), coalesce(bt.typtype, t.typtype)
        FROM pg_type t LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
        WHERE t.oid = ANY(%s)
        """,
        (oids,),
    ).fetchall()
    return {oid: (name, kind_of(base, category, typtype)) for oid, name, base, category, typtype in rows}


def generated_column_warnings(infos: dict[str, TableInfo]) -> list[str]:
    """One line per captured table with generated columns: they are never captured."""
    return [
        f"table {name} has generated columns ({', '.join(info.generated)}): they are not captured, "
        "because PostgreSQL's logical replication does not send them; snapshot and streamed events "
        "both leave them out (see docs/capture.md)"
        for name, info in sorted(infos.items())
        if info.generated
    ]


def check_tables(pipeline: Pipeline, infos: dict[str, TableInfo]) -> None:
    """Refuse what capture cannot do correctly, before creating anything."""
    for table in pipeline.captured_tables():
        info = infos.get(table)
        if info is None:
            raise CaptureError(
                f"table {pipeline.schema}.{table} does not exist",
                hint=f"create it, or remove it from {pipeline.source_file or 'the pipeline'}",
            )
        spec = pipeline.tables.get(table)
        names = {c.name for c in info.columns}
        excluded = set(spec.exclude_columns) if spec else set()
        for col in sorted(excluded - names - set(info.generated)):
            raise CaptureError(
                f"tables.{table}.exclude_columns names {col!r}, which {table} does not have",
                hint=f"columns of {table}: {', '.join(sorted(names))}",
            )
        if spec is not None:
            id_cols = _id_columns(spec.entity_id) or info.primary_key
            if not id_cols:
                raise CaptureError(
                    f"table {pipeline.schema}.{table} has no primary key, so its events have no entity id",
                    hint=f"add a PRIMARY KEY to {table}, or set tables.{table}.entity_id in the pipeline",
                )
            for col in sorted(set(id_cols) & excluded):
                raise CaptureError(
                    f"tables.{table}.exclude_columns names {col!r}, which is part of the entity id",
                    hint=f"remove {col!r} from exclude_columns (events need their entity id)",
                )
            for col in id_cols:
                if col in info.generated:
                    raise CaptureError(
                        f"tables.{table}.entity_id names {col!r}, a generated column, which logical "
                        "replication never sends",
                        hint=f"use a stored (non-generated) column of {table} as entity_id",
                    )
                if col not in names:
                    raise CaptureError(
                        f"tables.{table}.entity_id names {col!r}, which {table} does not have",
                        hint=f"columns of {table}: {', '.join(sorted(names))}",
                    )
        for c in info.columns:
            if c.kind is None and c.name not in excluded:
                raise unsupported_column(table, c.name, c.type_name)


def unsupported_column(table: str, column: str, type_name: str) -> CaptureError:
    return CaptureError(
        f"column {table}.{column} has type {type_name}, which capture does not support",
        hint=f"add {column!r} to tables.{table}.exclude_columns, or store it as text/jsonb "
        "(supported: numbers, text, boolean, date/time, uuid, bytea, json/jsonb, enums, inet/cidr/macaddr, "
        "bit strings)",
    )


def _id_columns(entity_id: str | list[str] | None) -> tuple[str, ...]:
    if entity_id is None:
        return ()
    return (entity_id,) if isinstance(entity_id, str) else tuple(entity_id)


def id_columns(pipeline: Pipeline, info: TableInfo) -> tuple[str, ...]:
    spec = pipeline.tables[info.name]
    return _id_columns(spec.entity_id) or info.primary_key


GENERATED_COLUMNS_SINCE = 180000  # publish_generated_columns (stored generated columns) exists

_PLAIN_IDENT = re.compile(r"[a-z_][a-z0-9_$]*")


def _quote(name: str) -> str:
    return name if _PLAIN_IDENT.fullmatch(name) else '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class Storage:
    """A table the application writes rows into: a captured table, or a partition of one."""

    table: str  # the captured (pipeline) table it belongs to
    schema: str
    name: str
    is_partition: bool
    has_rows: bool  # relkind r: a partitioned table (p) stores nothing itself
    replica_identity: str  # d, n, f, i
    identity_columns: tuple[str, ...] | None  # None: no usable identity (FULL: every column)
    virtual_columns: tuple[str, ...] = ()  # VIRTUAL generated columns (PostgreSQL 18+)

    @property
    def ident(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.name))

    @property
    def qualified(self) -> str:
        """``schema.name`` as SQL text (quoted where PostgreSQL needs it), for messages."""
        return f"{_quote(self.schema)}.{_quote(self.name)}"

    @property
    def label(self) -> str:
        if self.is_partition:
            return f"partition {self.qualified} of {self.table}"
        return f"table {self.qualified}"

    @property
    def usable(self) -> bool:
        """Whether PostgreSQL lets the application UPDATE/DELETE it once it is published."""
        return not self.has_rows or self.replica_identity == "f" or bool(self.identity_columns)


def inspect_storage(conn: psycopg.Connection, schema: str, tables: list[str]) -> list[Storage]:
    """Each captured table and every partition below it, with its replica identity."""
    rows = conn.execute(
        """
        WITH roots AS (
            SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')
        ), rels AS (
            SELECT relname AS root, oid AS relid, false AS is_partition FROM roots
            UNION
            SELECT r.relname, t.relid, true FROM roots r, pg_partition_tree(r.oid) t WHERE t.level > 0
        )
        SELECT rels.root, n.nspname, c.relname, rels.is_partition, c.relkind = 'r', c.relreplident,
               (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_index i
                JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                WHERE i.indrelid = c.oid AND CASE c.relreplident WHEN 'd' THEN i.indisprimary
                                                               WHEN 'i' THEN i.indisreplident
                                                               ELSE false END),
               (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
                WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = 'v')
        FROM rels JOIN pg_class c ON c.oid = rels.relid JOIN pg_namespace n ON n.oid = c.relnamespace
        ORDER BY 1, 4, 2, 3
        """,
        (schema, tables),
    ).fetchall()
    return [
        Storage(root, ns, name, is_part, has_rows, ident, tuple(cols) if cols else None, tuple(virt or ()))
        for root, ns, name, is_part, has_rows, ident, cols, virt in rows
    ]


def _why_unusable(st: Storage) -> str:
    if st.replica_identity == "n":
        return "has REPLICA IDENTITY NOTHING"
    if st.replica_identity == "i":
        return "has REPLICA IDENTITY USING INDEX, but that index is gone"
    return "has no primary key and REPLICA IDENTITY DEFAULT"


def identity_problems(pipeline: Pipeline, storages: list[Storage]) -> list[tuple[str, str]]:
    """(problem, fix) for every table or partition whose UPDATEs and DELETEs PostgreSQL would
    refuse once the publication includes it: no usable replica identity, VIRTUAL generated
    columns under a FULL identity, or (``replica_identity: default``) a column list that leaves
    out part of the identity."""
    out: list[tuple[str, str]] = []
    default_mode = pipeline.replication.replica_identity == "default"
    for st in storages:
        ours = st.table in pipeline.tables  # a captured table, not the outbox
        if not st.has_rows:
            continue
        if st.virtual_columns and (st.replica_identity == "f" or (ours and not default_mode)):
            reset = (
                f"ALTER TABLE {st.qualified} REPLICA IDENTITY DEFAULT and "
                if st.replica_identity == "f"
                else ""
            )
            out.append(
                (
                    f"{st.label} has VIRTUAL generated columns ({', '.join(st.virtual_columns)}), which "
                    "REPLICA IDENTITY FULL would include but no publication can send",
                    f"{reset}set replication.replica_identity: default (with a primary key on "
                    f"{st.qualified}), or make the generated columns STORED",
                )
            )
            continue
        if not st.usable:
            fix = (
                f"run ALTER TABLE {st.qualified} REPLICA IDENTITY FULL (or REPLICA IDENTITY USING INDEX "
                "<a unique index on NOT NULL columns>)"
            )
            if ours and default_mode:
                fix += ", or set replication.replica_identity: full to have cdcrouter set FULL itself"
            out.append((f"{st.label} {_why_unusable(st)}", fix))
            continue
        spec = pipeline.tables.get(st.table)
        if not (spec and spec.exclude_columns and default_mode):
            continue
        # with replica_identity: default the excluded columns become a column list, which must
        # cover the identity: every column under FULL
        if st.replica_identity == "f":
            out.append(
                (
                    f"tables.{st.table}.exclude_columns needs a publication column list, but {st.label} "
                    "has REPLICA IDENTITY FULL, which a column list must cover entirely",
                    "set replication.replica_identity: full (cdcrouter then drops excluded columns "
                    f"itself), or run ALTER TABLE {st.qualified} REPLICA IDENTITY DEFAULT",
                )
            )
            continue
        left_out = sorted(set(spec.exclude_columns) & set(st.identity_columns or ()))
        if left_out:
            out.append(
                (
                    f"tables.{st.table}.exclude_columns leaves out {', '.join(left_out)}, part of the "
                    f"replica identity of {st.label}: a publication column list must cover it",
                    f"keep {', '.join(left_out)} (remove it from exclude_columns), or set "
                    "replication.replica_identity: full (cdcrouter then drops excluded columns itself)",
                )
            )
    return out


def _raise_identity_problems(problems: list[tuple[str, str]]) -> None:
    if problems:
        raise CaptureError(
            "capture would break the application's writes: "
            + "; ".join(p for p, _ in problems)
            + ". Once in the publication, PostgreSQL would refuse the application's UPDATEs and "
            "DELETEs of it. Nothing was changed",
            hint="; ".join(dict.fromkeys(f for _, f in problems)),
        )


def set_full_identity(conn: psycopg.Connection, storages: list[Storage]) -> list[Storage]:
    """``REPLICA IDENTITY FULL`` on every table and partition that lacks it; returns them."""
    changed = []
    for st in storages:
        if st.replica_identity == "f" or st.virtual_columns:  # FULL with virtual columns: refused
            continue
        try:
            conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(st.ident))
        except psycopg.Error as exc:
            raise CaptureError(
                f"cannot set REPLICA IDENTITY FULL on {st.label}: {str(exc).strip()}",
                hint=f"let the capture user own it, or run ALTER TABLE {st.qualified} "
                "REPLICA IDENTITY FULL yourself; the publication was not changed",
            ) from exc
        changed.append(st)
    return changed


def prepare_identity(conn: psycopg.Connection, pipeline: Pipeline, tables: list[str]) -> list[Storage]:
    """Bring ``tables`` (and their partitions) to an identity the publication can live with:
    FULL with ``replica_identity: full`` (tables, not the outbox), else refuse. Returns what was
    set to FULL. Raises CaptureError before anything would break the application's writes."""
    storages = inspect_storage(conn, pipeline.schema, tables)
    changed: list[Storage] = []
    if pipeline.replication.replica_identity == "full":
        changed = set_full_identity(conn, [st for st in storages if st.table in pipeline.tables])
        if changed:
            storages = inspect_storage(conn, pipeline.schema, tables)
    _raise_identity_problems(identity_problems(pipeline, storages))
    _raise_entity_id_problems(pipeline, storages)
    return changed


def entity_id_problems(pipeline: Pipeline, storages: list[Storage]) -> list[tuple[str, str]]:
    """(problem, fix) for every captured table whose ``entity_id`` is not covered by its replica
    identity: a DELETE then carries only the identity's columns, so its event would have an empty
    entity id (and land in another partition than the entity's other events)."""
    out: list[tuple[str, str]] = []
    for st in storages:
        spec = pipeline.tables.get(st.table)
        if not st.has_rows or spec is None or spec.entity_id is None or st.replica_identity == "f":
            continue
        wanted = _id_columns(spec.entity_id)
        missing = [c for c in wanted if c not in (st.identity_columns or ())]
        if missing:
            out.append(
                (
                    f"tables.{st.table}.entity_id uses {', '.join(missing)}, which the replica identity "
                    f"of {st.label} does not include, so its DELETE events would have no entity id",
                    "set replication.replica_identity: full, or run ALTER TABLE "
                    f"{st.qualified} REPLICA IDENTITY USING INDEX <a unique index on "
                    f"({', '.join(wanted)}), NOT NULL>, or choose an entity_id within the primary key",
                )
            )
    return out


def _raise_entity_id_problems(pipeline: Pipeline, storages: list[Storage]) -> None:
    problems = entity_id_problems(pipeline, storages)
    if problems:
        raise CaptureError(
            "; ".join(p for p, _ in problems) + ". Nothing was changed",
            hint="; ".join(dict.fromkeys(f for _, f in problems)),
        )


def ensure_publication(conn: psycopg.Connection, pipeline: Pipeline, infos: dict[str, TableInfo]) -> None:
    """Create the publication, or bring its table list in line with the pipeline.

    First every table (and partition) gets a replica identity the publication can live with,
    or capture refuses: a table in a publication without one makes PostgreSQL refuse the
    application's UPDATEs and DELETEs. Changes of partitions are published under the
    partitioned (root) table: ``publish_via_partition_root``.
    """
    prepare_identity(conn, pipeline, pipeline.captured_tables())
    schema = pipeline.schema
    parts = []
    for table in pipeline.captured_tables():
        spec = pipeline.tables.get(table)
        item = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        # A column list must cover the replica identity, or PostgreSQL refuses the application's
        # UPDATEs: with REPLICA IDENTITY FULL the engines drop excluded columns instead.
        if spec and spec.exclude_columns and pipeline.replication.replica_identity == "default":
            keep = [c.name for c in infos[table].columns if c.name not in spec.exclude_columns]
            item = sql.SQL("{} ({})").format(item, sql.SQL(", ").join(map(sql.Identifier, keep)))
        if spec and spec.row_filter:
            item = sql.SQL("{} WHERE ({})").format(item, sql.SQL(spec.row_filter))  # type: ignore[arg-type]
        parts.append(item)
    table_list = sql.SQL(", ").join(parts)
    pub = sql.Identifier(pipeline.replication.publication)
    # PostgreSQL 18 refuses UPDATEs of a FULL-identity table whose stored generated columns the
    # publication does not send: it sends them, and the engines drop them (docs/capture.md).
    gencols = conn.info.server_version >= GENERATED_COLUMNS_SINCE
    options = ["publish_via_partition_root = true"] + (
        ["publish_generated_columns = stored"] if gencols else []
    )
    current = conn.execute(
        "SELECT pubviaroot, " + ("pubgencols = 's'" if gencols else "true") + " FROM pg_publication "
        "WHERE pubname = %s",
        (pipeline.replication.publication,),
    ).fetchone()
    with_options = sql.SQL(", ".join(options))
    try:
        if current:
            conn.execute(sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(pub, table_list))
            if not all(current):
                conn.execute(sql.SQL("ALTER PUBLICATION {} SET ({})").format(pub, with_options))
        else:
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH (publish = {}, {})").format(
                    pub, table_list, sql.Literal("insert, update, delete, truncate"), with_options
                )
            )
    except psycopg.Error as exc:
        raise CaptureError(
            f"cannot create or update publication {pipeline.replication.publication}: {str(exc).strip()}",
            hint="check row_filter / exclude_columns in the pipeline and that the user owns the tables",
        ) from exc


def unpublished_tables(conn: psycopg.Connection, pipeline: Pipeline) -> tuple[list[str], list[str]]:
    """Captured tables missing from the publication: (exist, so dropped and created again since
    the publication was made; do not exist, dropped). PostgreSQL removes a dropped table from
    every publication, and a table created under the same name is not in any."""
    tables = pipeline.captured_tables()
    rows = conn.execute(
        """
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')
          AND NOT EXISTS (SELECT 1 FROM pg_publication_tables t WHERE t.pubname = %s
                          AND t.schemaname = n.nspname AND t.tablename = c.relname)
        """,
        (pipeline.schema, tables, pipeline.replication.publication),
    ).fetchall()
    existing = {
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')",
            (pipeline.schema, tables),
        )
    }
    return sorted(r[0] for r in rows), sorted(set(tables) - existing)


def leaf_partitions(conn: psycopg.Connection, schema: str, tables: list[str]) -> dict[str, set[int]]:
    """The oids of the leaf partitions (those holding rows) of each partitioned table."""
    rows = conn.execute(
        """
        SELECT c.relname, t.relid::oid::int FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace, pg_partition_tree(c.oid) t
        WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind = 'p' AND t.isleaf
        """,
        (schema, tables),
    ).fetchall()
    out: dict[str, set[int]] = {}
    for table, relid in rows:
        out.setdefault(table, set()).add(relid)
    return out


def check_wal_level(conn: psycopg.Connection) -> None:
    level = conn.execute("SHOW wal_level").fetchone()[0]  # type: ignore[index]
    if level != "logical":
        raise CaptureError(
            f"PostgreSQL runs with wal_level={level}; logical replication needs wal_level=logical",
            hint="set wal_level = logical in postgresql.conf (or ALTER SYSTEM) and restart PostgreSQL",
        )


def slot_exists(conn: psycopg.Connection, slot: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
        is not None
    )


def drop_slot(conn: psycopg.Connection, slot: str, timeout_s: float = 5.0) -> None:
    """Drop a slot, ending the walsender that holds it (again if its client comes straight back).

    Returns once the slot is gone; raises a CaptureError naming the process that holds it when it
    cannot be dropped within ``timeout_s`` (a client that reconnects at once, or one this user may
    not end): an operator who asked for the drop never gets silence."""
    deadline = time.monotonic() + timeout_s
    while True:
        row = conn.execute(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()
        if row is None:
            return
        pid = row[0]
        try:
            if pid is None:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                return
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        except psycopg.errors.UndefinedObject:
            return  # dropped by someone else meanwhile
        except psycopg.errors.ObjectInUse:
            pass  # taken again between the two statements: try again
        except psycopg.errors.InsufficientPrivilege as exc:
            raise _slot_held(
                conn, slot, pid, f"this user may not end it ({exc.diag.message_primary})"
            ) from exc
        if time.monotonic() >= deadline:
            held = conn.execute(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
            if held is None:
                return
            now = held[0] or pid
            why = (
                "has not exited since it was ended"
                if now == pid
                else f"took it as soon as the previous holder (PID {pid}) was ended"
            )
            raise _slot_held(conn, slot, now, f"{why} (tried for {timeout_s:g} s)")
        time.sleep(0.02)


def _slot_held(conn: psycopg.Connection, slot: str, pid: int, why: str) -> CaptureError:
    """The error for a slot another process holds: who it is, and how to stop it."""
    row = conn.execute(
        "SELECT usename, application_name, client_addr::text FROM pg_stat_activity WHERE pid = %s", (pid,)
    ).fetchone()
    who = f"PID {pid}"
    if row is not None:
        user, app, addr = row
        who += f" (user {user}, application {app or 'unnamed'}, client {addr or 'local socket'})"
    return CaptureError(
        f"cannot drop replication slot {slot}: {who} is streaming from it and {why}",
        hint="stop that process first (another `cdcrouter capture run` of this pipeline, or a Debezium "
        "connector: pause or delete it on Kafka Connect), or end it as a superuser with "
        f"SELECT pg_terminate_backend({pid}); then try again",
    )


def drop_publication(conn: psycopg.Connection, publication: str) -> None:
    conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(publication)))


FAILOVER_SINCE = 170000  # server_version_num of the first release with failover slots


def _failover_unsupported(version: int) -> CaptureError:
    return CaptureError(
        "replication.failover needs PostgreSQL 17 or newer; "
        f"this server is {version // 10000}.{version % 10000}",
        hint="set replication.failover: false (or remove it), or upgrade PostgreSQL to 17+",
    )


def check_failover(conn: psycopg.Connection, failover: bool) -> bool:
    """Refuse ``replication.failover`` before PostgreSQL 17; True if the server has failover slots."""
    version = conn.info.server_version
    if failover and version < FAILOVER_SINCE:
        raise _failover_unsupported(version)
    return version >= FAILOVER_SINCE


def sync_failover(conn: psycopg.Connection, pg: PostgresSettings, slot: str, failover: bool) -> None:
    """Give an existing slot the failover flag the pipeline asks for (a new slot is created with it),
    so turning ``replication.failover`` on or off takes effect at the next start."""
    if not check_failover(conn, failover):
        return
    row = conn.execute("SELECT failover FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    if row is None or row[0] == failover:
        return
    stream = ReplicationStream(pg)
    try:
        with pg_errors(f"cannot set failover on replication slot {slot}", pg):
            stream.cursor.execute(f'ALTER_REPLICATION_SLOT "{slot}" (FAILOVER {str(failover).lower()})')
    finally:
        stream.close()


class ReplicationStream:
    """A psycopg2 logical replication connection: slot creation with snapshot, then streaming."""

    def __init__(self, pg: PostgresSettings) -> None:
        self.pg = pg
        with pg_errors("cannot open a replication connection to PostgreSQL", pg):
            self.conn = psycopg2.connect(
                pg.conninfo(
                    options=SESSION_OPTIONS, application_name="cdcrouter-capture", connect_timeout="10"
                ),
                connection_factory=psycopg2.extras.LogicalReplicationConnection,
            )
        self.cursor = self.conn.cursor()

    def create_slot_with_snapshot(self, slot: str, *, failover: bool = False) -> tuple[int, str]:
        """Create the slot; returns (consistent point LSN, exported snapshot name).

        ``failover`` (PostgreSQL 17+) lets standbys with ``sync_replication_slots`` keep a copy
        of the slot, so capture resumes from it after a failover. The snapshot stays usable only
        until this connection runs its next command.
        """
        from cdcrouter.capture.pgoutput import str_to_lsn

        if failover and self.conn.server_version < FAILOVER_SINCE:
            raise _failover_unsupported(self.conn.server_version)
        options = "(SNAPSHOT 'export', FAILOVER true)" if failover else "EXPORT_SNAPSHOT"
        with pg_errors(f"cannot create replication slot {slot}", self.pg):
            self.cursor.execute(f'CREATE_REPLICATION_SLOT "{slot}" LOGICAL pgoutput {options}')
            _name, point, snapshot, _plugin = self.cursor.fetchone()
        return str_to_lsn(point), snapshot

    def timeline(self) -> int:
        """The timeline the server is on (IDENTIFY_SYSTEM): it changes when a standby is promoted."""
        with pg_errors("cannot identify the PostgreSQL server", self.pg):
            self.cursor.execute("IDENTIFY_SYSTEM")
            row = self.cursor.fetchone()
        return int(row[1])

    def switchpoint(self, timeline: int, parent: int) -> int | None:
        """Where timeline ``parent`` ended in ``timeline``'s history (TIMELINE_HISTORY): the WAL
        position at which the promoted server's history parts from the old primary's; None if
        ``parent`` is not in that history."""
        from cdcrouter.capture.pgoutput import str_to_lsn

        with pg_errors(f"cannot read the history of timeline {timeline}", self.pg):
            self.cursor.execute(f"TIMELINE_HISTORY {int(timeline)}")
            _name, content = self.cursor.fetchone()
        text = content.decode() if isinstance(content, bytes | memoryview) else str(content)
        for line in text.splitlines():
            fields = line.split("\t")
            if len(fields) >= 2 and fields[0].strip().isdigit() and int(fields[0]) == parent:
                return str_to_lsn(fields[1].strip())
        return None

    def start(self, slot: str, publication: str, start_lsn: int) -> None:
        try:
            self.cursor.start_replication(
                slot_name=slot,
                slot_type=psycopg2.extras.REPLICATION_LOGICAL,
                start_lsn=start_lsn,
                # messages: snapshot watermarks and signals (pg_logical_emit_message, PostgreSQL 14+)
                options={"proto_version": "1", "publication_names": publication, "messages": "true"},
                decode=False,
                status_interval=10,
            )
        except psycopg2.Error as exc:
            text = str(exc).strip()
            if "does not exist" in text and "slot" in text:
                raise CaptureError(
                    f"replication slot {slot} does not exist (it was dropped)",
                    hint="changes made while it was gone are lost to capture; start again with "
                    "`cdcrouter capture run --resnapshot` (new slot and a fresh snapshot)",
                ) from exc
            if exc.pgcode == "55000" and "invalidated" in text:  # sqlstate: object not in prerequisite state
                # wal_removed (max_slot_wal_keep_size), idle_timeout (18's idle_replication_slot_timeout):
                # a retry cannot bring the slot back, so this is not the OperationalError the engine retries
                raise CaptureError(
                    f"replication slot {slot} was invalidated by PostgreSQL: {text}",
                    hint="the changes it held are gone; start again with `cdcrouter capture run "
                    "--resnapshot` (new slot and a fresh snapshot), and see docs/capture.md for the "
                    "settings that invalidate slots",
                ) from None
            if "synchroniz" in text:  # a standby's synced copy: usable only once it is promoted
                raise CaptureError(
                    f"replication slot {slot} on this server is a standby's synchronised copy: {text}",
                    hint="capture reached a standby; list the primary and its standbys in "
                    "connections.postgres.host (with target_session_attrs: primary, the default for "
                    "several hosts), or promote this standby",
                ) from exc
            if "is active for PID" in text:
                raise CaptureError(
                    f"replication slot {slot} is in use by another process: {text}",
                    hint="only one capture may run per slot; stop the other one or use another slot name",
                ) from exc
            raise CaptureError(
                f"cannot start replication from slot {slot}: {text}", hint="see the server log"
            ) from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()
