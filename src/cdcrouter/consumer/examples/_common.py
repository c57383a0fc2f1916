"""What the three example consumers share: their PostgreSQL schema and the ``view`` query helper."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg.rows import dict_row

from cdcrouter.config import Connections
from cdcrouter.consumer import ConsumerError

DEFAULT_SCHEMA = "cdcrouter_examples"
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_schema(schema: str) -> str:
    if not _IDENT.match(schema):
        raise ConsumerError(f"invalid schema name {schema!r}", hint="use lowercase letters, digits and _")
    return schema


def apply_ddl(connections: Connections, schema: str, ddl: str) -> None:
    """Create the example's tables (idempotent; concurrent starts are fine)."""
    with psycopg.connect(connections.postgres.conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('cdcrouter_examples_ddl'))")
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        conn.execute(ddl.format(s=schema))


def query(connections: Connections, sql: str) -> list[dict[str, Any]]:
    with psycopg.connect(connections.postgres.conninfo(), row_factory=dict_row) as conn:
        return list(conn.execute(sql))
