"""Service history: every car's services, total cost and last known mileage, in PostgreSQL.

Reads ``filtered-service-events`` (``ServiceRecord`` entities), effectively-once through
``ctx.conn``. Run alone: ``python -m cdcrouter.consumer.examples.service``.
"""

from __future__ import annotations

from typing import Any

from cdcrouter.config import Connections, load_connections
from cdcrouter.consumer import ConsumerApp, Context, Event, PostgresStore
from cdcrouter.consumer.examples._common import DEFAULT_SCHEMA, apply_ddl, check_schema, query

TOPIC = "filtered-service-events"
DDL = """
CREATE TABLE IF NOT EXISTS {s}.service_history (
    record_id text PRIMARY KEY, car_id text, service_type text, cost numeric, mileage bigint,
    serviced_on text, deleted boolean NOT NULL DEFAULT false);
"""


def build(
    connections: Connections | None = None,
    *,
    topic: str = TOPIC,
    schema: str = DEFAULT_SCHEMA,
    name: str = "service-consumer",
    **app_options: Any,
) -> ConsumerApp:
    """The service-history consumer (tables created in ``schema``)."""
    connections = connections or load_connections()
    s = check_schema(schema)
    apply_ddl(connections, s, DDL)
    store = PostgresStore(connections.postgres.conninfo(), table=f"{s}.processed_events")
    app = ConsumerApp(name, connections, store=store, **app_options)

    @app.on(topic)
    def record(event: Event, ctx: Context) -> None:
        for e in event.entities_of("ServiceRecord"):
            ctx.conn.execute(
                f"INSERT INTO {s}.service_history AS h"
                " (record_id, car_id, service_type, cost, mileage, serviced_on, deleted)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (record_id) DO UPDATE SET"
                " car_id = coalesce(excluded.car_id, h.car_id),"
                " service_type = coalesce(excluded.service_type, h.service_type),"
                " cost = coalesce(excluded.cost, h.cost), mileage = coalesce(excluded.mileage, h.mileage),"
                " serviced_on = coalesce(excluded.serviced_on, h.serviced_on), deleted = excluded.deleted",
                (
                    e.entity_id,
                    e.attr("car_id"),
                    e.attr("service_type"),
                    e.decimal("cost"),
                    e.integer("mileage"),
                    e.attr("serviced_on"),
                    event.source.operation == "DELETE",
                ),
            )

    return app


def view(connections: Connections | None = None, schema: str = DEFAULT_SCHEMA) -> list[dict[str, Any]]:
    """One row per car: number of services, total cost, highest mileage, latest service."""
    s = check_schema(schema)
    return query(
        connections or load_connections(),
        f"SELECT car_id, count(*) AS services, coalesce(sum(cost), 0) AS total_cost,"
        f" max(mileage) AS mileage, max(serviced_on) AS last_serviced_on,"
        f" (array_agg(service_type ORDER BY serviced_on DESC NULLS LAST))[1] AS last_service"
        f" FROM {s}.service_history WHERE NOT deleted GROUP BY car_id ORDER BY car_id",
    )


if __name__ == "__main__":
    build().run()
