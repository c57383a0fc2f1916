"""The drill's consumer: an SDK ``ConsumerApp`` keeping a view of the drill's rows in PostgreSQL.

It stands for a team's consumer application. It deduplicates by ``eventHeader.uuid`` with the
SDK's ``PostgresStore``, writing the uuid and its view row in one transaction, and counts every
delivery of a row in the view (``deliveries``), so a duplicate that got past the store would show.
Run as its own process so a drill can kill it, or move it to another region:
``python -m cdcrouter.dr.view_app --topic T --group G --schema S --table V``.
"""

from __future__ import annotations

import argparse
import sys

import psycopg
from psycopg import sql


def view_ddl(schema: str, table: str) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {}.{} (id text PRIMARY KEY, val text, uuid text NOT NULL,"
        " deliveries int NOT NULL DEFAULT 1)"
    ).format(sql.Identifier(schema), sql.Identifier(table))


def read_view(conninfo: str, schema: str, table: str) -> dict[str, tuple[str, int]]:
    """``id -> (val, deliveries)`` as the consumer recorded them."""
    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        rows = conn.execute(
            sql.SQL("SELECT id, val, deliveries FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
        ).fetchall()
    return {r[0]: (r[1], int(r[2])) for r in rows}


def main(argv: list[str] | None = None) -> int:
    from cdcrouter.config import load_connections
    from cdcrouter.consumer import ConsumerApp, PostgresStore
    from cdcrouter.observe import logs

    ap = argparse.ArgumentParser(prog="cdcrouter.dr.view_app")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--schema", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--session-timeout-ms", type=int, default=None)
    args = ap.parse_args(argv)
    logs.configure()
    conns = load_connections()
    conninfo = conns.postgres.conninfo()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(view_ddl(args.schema, args.table))
    store = PostgresStore(conninfo, table=f"{args.schema}.{args.table}_seen")
    kafka = {} if args.session_timeout_ms is None else {"session.timeout.ms": args.session_timeout_ms}
    app = ConsumerApp(args.group, conns, group=args.group, store=store, batch_timeout=0.2, kafka_config=kafka)
    upsert = sql.SQL(
        "INSERT INTO {t} (id, val, uuid) VALUES (%s, %s, %s) ON CONFLICT (id) DO UPDATE"
        " SET deliveries = {t}.deliveries + 1, val = excluded.val, uuid = excluded.uuid"
    ).format(t=sql.SQL("{}.{}").format(sql.Identifier(args.schema), sql.Identifier(args.table)))

    @app.on(args.topic)
    def keep(event, ctx):  # type: ignore[no-untyped-def]
        ctx.conn.execute(upsert, (event.entity.entity_id, event.entity.attr("val"), event.uuid))

    stats = app.run()
    print(f"view: processed {stats.processed}, duplicates skipped {stats.duplicates}", file=sys.stderr)
    store.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
