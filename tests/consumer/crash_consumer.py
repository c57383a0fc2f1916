"""A consumer run as a subprocess by test_delivery.py (it may be SIGKILLed before its commit)."""

from __future__ import annotations

import json
import sys

from cdcrouter.config import load_connections
from cdcrouter.consumer import ConsumerApp, PostgresStore


def main(topic: str, group: str, table: str, count: int) -> None:
    conns = load_connections()
    store = PostgresStore(conns.postgres.conninfo(), table=f"{table}_seen")
    # A short session timeout: the killed member leaves the group in seconds, not 45 s.
    app = ConsumerApp(
        "crashy",
        conns,
        group=group,
        store=store,
        max_batch=5,
        batch_timeout=0.5,
        kafka_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
    )

    @app.on(topic)
    def book(ev, ctx):
        ctx.conn.execute(f"INSERT INTO {table} (event_uuid) VALUES (%s)", (ev.uuid,))

    stats = app.run(timeout=60, max_messages=count)
    print(json.dumps({"processed": stats.processed, "duplicates": stats.duplicates}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
