"""Batch handlers: one store transaction per poll, and a bad event isolated from its batch."""

from __future__ import annotations

import pytest

from cdcrouter.consumer import ConsumerApp, ConsumerError, PostgresStore

from .conftest import event, rows

pytestmark = pytest.mark.integration


def test_batch_handler_dedupes_isolates_the_bad_event_and_commits_once(
    conns, topic, produce, effects
) -> None:
    src = topic(partitions=1)
    records = [event("LoanCreated", f"L-{i}") for i in range(10)]
    uuids = produce(src, [*records, records[0]])  # the last one is a redelivery of the first
    bad = uuids[5]
    store = PostgresStore(conns.postgres.conninfo(), table=f"{effects}_seen")
    app = ConsumerApp("batcher", conns, group=f"{src}-g", store=store, retries=1, backoff=0.01, max_batch=50)
    sizes: list[int] = []

    @app.on_batch(src)
    def book(events, ctx):
        sizes.append(len(events))
        with ctx.conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {effects} (event_uuid) VALUES (%s)", [(e.uuid,) for e in events])
        if any(e.uuid == bad for e in events):
            raise ValueError("cannot book L-5")

    stats = app.run(timeout=60, max_messages=11)
    store.close()
    assert max(sizes) > 1  # the events really came in batches
    assert (stats.processed, stats.duplicates, stats.dead_lettered) == (9, 1, 1)
    assert sorted(rows(conns, effects)) == sorted(u for u in uuids[:10] if u != bad)
    assert app.stats.last_dead_letter["event_uuid"] == bad


def test_a_topic_has_either_a_batch_handler_or_event_handlers() -> None:
    app = ConsumerApp("mixed", connections=object())  # type: ignore[arg-type]  # no I/O before run()
    app.on("t")(lambda ev: None)
    with pytest.raises(ConsumerError, match="already has a handler"):
        app.on_batch("t")(lambda events: None)
