"""A handler failing on a record larger than 1 MB still dead-letters it, and the app goes on.

The SDK's dead-letter producer kept librdkafka's 1 MB `message.max.bytes` and created
`<topic>.<consumer>.dlq` with the broker's 1 MB limit, while capture writes changes up to 8 MiB
and `topics apply` sizes filtered topics for them: the app stopped with a bare
`KafkaException(MSG_SIZE_TOO_LARGE)`, and every restart met the same record again (stalled for
good). Found driving a 2 MB customer row through capture, the router and a consumer.
"""

from __future__ import annotations

import time

import fastavro
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from cdcrouter.consumer import ConsumerApp, RegistryClient
from cdcrouter.consumer._kafka import admin, ensure_topic, producer_conf
from cdcrouter.consumer._replay import read_dlq, replay
from cdcrouter.consumer._serde import encode

from .conftest import FILTERED_SCHEMA, event

pytestmark = pytest.mark.integration
BIG = 2_000_000


def _big_topic(conns, topic) -> str:  # type: ignore[no-untyped-def]
    """A filtered topic sized like `topics apply` does, with a 2 MB event and a small one after it."""
    src = topic(partitions=1)
    entry = ConfigEntry(
        "max.message.bytes", str(8 * 1024 * 1024 + 64 * 1024), incremental_operation=AlterConfigOpType.SET
    )
    res = ConfigResource(ConfigResource.Type.TOPIC, src, incremental_configs=[entry])
    client = admin(conns)  # kept alive until the futures are done
    for fut in client.incremental_alter_configs([res]).values():
        fut.result(30)
    deadline = time.monotonic() + 30
    while True:  # the broker applies topic configs asynchronously
        described = client.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, src)])
        if next(iter(described.values())).result(30)["max.message.bytes"].value == entry.value:
            break
        assert time.monotonic() < deadline, "max.message.bytes not applied in 30 s"
        time.sleep(0.2)
    schema_id = RegistryClient(conns.registry).register(f"{src}-value", FILTERED_SCHEMA)
    parsed = fastavro.parse_schema(FILTERED_SCHEMA)
    producer = Producer(producer_conf(conns, **{"message.max.bytes": 4_000_000}))
    refused: list[object] = []
    for rec in (event("CustomerUpdated", "C-big", {"bio": "x" * BIG}), event("CustomerUpdated", "C-ok")):
        producer.produce(
            src,
            key=rec["eventBody"]["entities"][0]["entityId"].encode(),
            value=encode(schema_id, parsed, rec),
            on_delivery=lambda err, _m: err is not None and refused.append(err),
        )
    assert producer.flush(30) == 0 and not refused, refused
    return src


def _run(conns, src: str) -> tuple[ConsumerApp, list[str]]:  # type: ignore[no-untyped-def]
    seen: list[str] = []
    app = ConsumerApp("big", conns, group=f"{src}-g", retries=0, backoff=0.01)

    @app.on(src)
    def handle(ev) -> None:  # type: ignore[no-untyped-def]
        seen.append(ev.entity.entity_id)
        if len(ev.entity.attr("bio") or "") >= BIG and not seen.count("fixed"):
            raise ValueError("cannot store a 2 MB bio")

    stats = app.run(timeout=60, max_messages=2)
    assert (stats.processed, stats.dead_lettered) == (1, 1), stats
    return app, seen


def test_a_2_mb_record_is_dead_lettered_whole(conns, topic) -> None:  # type: ignore[no-untyped-def]
    src = _big_topic(conns, topic)
    app, seen = _run(conns, src)
    assert seen == ["C-big", "C-ok"]  # the app went on past it
    [rec] = read_dlq(conns, app.dlq_topic(src))
    assert rec.key == b"C-big" and len(rec.value or b"") > BIG  # the record itself, to replay later
    back = replay(conns, app.dlq_topic(src))  # to its origin, through a producer that takes it
    assert (back.replayed, back.targets) == (1, {src: 1})


def test_a_dead_letter_topic_too_small_gets_the_reference_without_the_value(conns, topic) -> None:  # type: ignore[no-untyped-def]
    """A DLQ created before with the broker's 1 MB: the letter keeps the headers (topic,
    partition, offset: where to read the record) and says the value was left out."""
    src = _big_topic(conns, topic)
    ensure_topic(conns, f"{src}.big.dlq")  # the broker's default limit
    app, seen = _run(conns, src)
    assert seen == ["C-big", "C-ok"]
    [rec] = read_dlq(conns, app.dlq_topic(src))
    assert rec.value is None and rec.key == b"C-big"
    assert "left out" in rec.failure["value.omitted"], rec.failure
    assert (rec.failure["topic"], rec.failure["offset"]) == (src, "0")
    # replayed into the (fixed) handler with the value read back from that position
    seen.append("fixed")  # the handler now stores large bios
    assert replay(conns, app.dlq_topic(src), app=app).replayed == 1
    assert seen[-1] == "C-big" and app.stats.processed == 2
