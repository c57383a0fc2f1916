"""Loan book: the outstanding amount and payment count of every loan, kept in PostgreSQL.

Reads ``filtered-loan-events`` (``Loan`` and ``LoanPayment`` entities). Loans and payments have
different keys, so a payment may arrive before its loan: the tables are written so that any
order gives the same book. Every write goes through ``ctx.conn``, in the idempotency store's
transaction: a redelivered event changes nothing.

Run alone: ``python -m cdcrouter.consumer.examples.loan`` (SIGTERM stops it cleanly).
"""

from __future__ import annotations

from typing import Any

from cdcrouter.config import Connections, load_connections
from cdcrouter.consumer import ConsumerApp, Context, Event, PostgresStore
from cdcrouter.consumer.examples._common import DEFAULT_SCHEMA, apply_ddl, check_schema, query

TOPIC = "filtered-loan-events"
DDL = """
CREATE TABLE IF NOT EXISTS {s}.loan_book (
    loan_id text PRIMARY KEY, customer text, status text, amount numeric,
    updated_at timestamptz DEFAULT now());
CREATE TABLE IF NOT EXISTS {s}.loan_book_payments (
    payment_id text PRIMARY KEY, loan_id text, amount numeric, status text);
"""


def build(
    connections: Connections | None = None,
    *,
    topic: str = TOPIC,
    schema: str = DEFAULT_SCHEMA,
    name: str = "loan-consumer",
    **app_options: Any,
) -> ConsumerApp:
    """The loan-book consumer (tables created in ``schema``)."""
    connections = connections or load_connections()
    s = check_schema(schema)
    apply_ddl(connections, s, DDL)
    store = PostgresStore(connections.postgres.conninfo(), table=f"{s}.processed_events")
    app = ConsumerApp(name, connections, store=store, **app_options)

    @app.on(topic)
    def book(event: Event, ctx: Context) -> None:
        deleted = event.source.operation == "DELETE"
        for e in event.entities:
            if e.entity_type == "Loan":
                if deleted:
                    ctx.conn.execute(
                        f"UPDATE {s}.loan_book SET status = 'DELETED' WHERE loan_id = %s", (e.entity_id,)
                    )
                    continue
                ctx.conn.execute(
                    f"INSERT INTO {s}.loan_book AS b (loan_id, customer, status, amount)"
                    " VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (loan_id) DO UPDATE SET customer = coalesce(excluded.customer, b.customer),"
                    " status = coalesce(excluded.status, b.status),"
                    " amount = coalesce(excluded.amount, b.amount),"
                    " updated_at = now()",
                    (e.entity_id, e.attr("customer_name"), e.attr("status"), e.decimal("loan.loanAmount")),
                )
            elif e.entity_type == "LoanPayment" and not deleted:
                loan_id = e.attr("loan_id")
                ctx.conn.execute(
                    f"INSERT INTO {s}.loan_book_payments AS p (payment_id, loan_id, amount, status)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (payment_id) DO UPDATE SET"
                    " loan_id = coalesce(excluded.loan_id, p.loan_id),"
                    " amount = coalesce(excluded.amount, p.amount),"
                    " status = coalesce(excluded.status, p.status)",
                    (e.entity_id, loan_id, e.decimal("amount"), e.attr("status")),
                )
                if loan_id:
                    ctx.conn.execute(
                        f"INSERT INTO {s}.loan_book (loan_id) VALUES (%s) ON CONFLICT DO NOTHING", (loan_id,)
                    )

    return app


def view(connections: Connections | None = None, schema: str = DEFAULT_SCHEMA) -> list[dict[str, Any]]:
    """One row per loan: amount, payments, paid and outstanding (amount minus paid)."""
    s = check_schema(schema)
    return query(
        connections or load_connections(),
        f"SELECT b.loan_id, b.customer, b.status, b.amount, count(p.payment_id) AS payments,"
        f" coalesce(sum(p.amount), 0) AS paid, b.amount - coalesce(sum(p.amount), 0) AS outstanding"
        f" FROM {s}.loan_book b LEFT JOIN {s}.loan_book_payments p USING (loan_id)"
        f" GROUP BY b.loan_id ORDER BY b.loan_id",
    )


if __name__ == "__main__":
    build().run()
