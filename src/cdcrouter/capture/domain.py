"""The sample domain (cars, loans, payments, service records, outbox) for demos and tests."""

from __future__ import annotations

from importlib.resources import files

import psycopg
from psycopg import sql

from cdcrouter.errors import CaptureError

# How the sample tables become business events: the pipeline ``tables:`` and ``outbox:`` sections
# shared by the demo and the tests (examples/pipeline.yaml spells the same mapping out for users).
SAMPLE_TABLES: dict[str, dict[str, object]] = {
    "car_entities": {"entity_type": "Car"},
    "loan_entities": {"entity_type": "Loan"},
    "loan_payments": {"entity_type": "LoanPayment", "events": {"insert": "LoanPaymentSubmitted"}},
    "service_records": {"entity_type": "ServiceRecord"},
}
SAMPLE_OUTBOX: dict[str, str] = {"table": "business_events"}


def domain_ddl() -> str:
    """The DDL of the sample domain (unqualified; see :func:`apply_domain`)."""
    return files("cdcrouter.capture").joinpath("sql/domain.sql").read_text()


def apply_domain(conninfo: str, schema: str = "public") -> None:
    """Create the sample tables in ``schema`` (created if missing). Idempotent.

    Args:
        conninfo: a libpq connection string, e.g. ``Connections.postgres.conninfo()``.
        schema: the PostgreSQL schema to create the tables in; use a unique one per test.
    """
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            conn.execute(domain_ddl().encode())
    except psycopg.Error as exc:
        raise CaptureError(
            f"could not create the sample domain in schema {schema}: {exc}".strip(),
            hint="check the PostgreSQL connection and that the user may CREATE in the database",
        ) from exc
