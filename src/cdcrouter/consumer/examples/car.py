"""Car inventory: the cars on the lot per make, with their total list price, in PostgreSQL.

Reads ``filtered-car-events`` (``Car`` entities), effectively-once through ``ctx.conn``.
Run alone: ``python -m cdcrouter.consumer.examples.car``.
"""

from __future__ import annotations

from typing import Any

from cdcrouter.config import Connections, load_connections
from cdcrouter.consumer import ConsumerApp, Context, Event, PostgresStore
from cdcrouter.consumer.examples._common import DEFAULT_SCHEMA, apply_ddl, check_schema, query

TOPIC = "filtered-car-events"
DDL = """
CREATE TABLE IF NOT EXISTS {s}.car_inventory (
    car_id text PRIMARY KEY, vin text, make text, model text, model_year int, price numeric,
    color text, active boolean);
"""


def build(
    connections: Connections | None = None,
    *,
    topic: str = TOPIC,
    schema: str = DEFAULT_SCHEMA,
    name: str = "car-consumer",
    **app_options: Any,
) -> ConsumerApp:
    """The car-inventory consumer (tables created in ``schema``)."""
    connections = connections or load_connections()
    s = check_schema(schema)
    apply_ddl(connections, s, DDL)
    store = PostgresStore(connections.postgres.conninfo(), table=f"{s}.processed_events")
    app = ConsumerApp(name, connections, store=store, **app_options)

    @app.on(topic)
    def stock(event: Event, ctx: Context) -> None:
        for e in event.entities_of("Car"):
            if event.source.operation == "DELETE":
                ctx.conn.execute(f"DELETE FROM {s}.car_inventory WHERE car_id = %s", (e.entity_id,))
                continue
            ctx.conn.execute(
                f"INSERT INTO {s}.car_inventory AS c"
                " (car_id, vin, make, model, model_year, price, color, active)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (car_id) DO UPDATE SET"
                " vin = coalesce(excluded.vin, c.vin), make = coalesce(excluded.make, c.make),"
                " model = coalesce(excluded.model, c.model),"
                " model_year = coalesce(excluded.model_year, c.model_year),"
                " price = coalesce(excluded.price, c.price), color = coalesce(excluded.color, c.color),"
                " active = coalesce(excluded.active, c.active)",
                (
                    e.entity_id,
                    e.attr("vin"),
                    e.attr("make"),
                    e.attr("model"),
                    e.integer("model_year"),
                    e.decimal("price"),
                    e.attr("color"),
                    e.boolean("active"),
                ),
            )

    return app


def view(connections: Connections | None = None, schema: str = DEFAULT_SCHEMA) -> list[dict[str, Any]]:
    """One row per make: cars in stock (active), all cars, and the stock's total list price."""
    s = check_schema(schema)
    return query(
        connections or load_connections(),
        f"SELECT make, count(*) FILTER (WHERE active IS NOT FALSE) AS in_stock, count(*) AS cars,"
        f" coalesce(sum(price) FILTER (WHERE active IS NOT FALSE), 0) AS stock_value"
        f" FROM {s}.car_inventory GROUP BY make ORDER BY make",
    )


if __name__ == "__main__":
    build().run()
