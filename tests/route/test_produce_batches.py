"""A lane queues each topic's records with one call (``Lane.produce_batches``): every record arrives
once, each key's in order, also when the queue runs full mid-batch; a refused record raises."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from cdcrouter.route.engine import Router, RouterOptions
from cdcrouter.route.lanes import Lane
from cdcrouter.topics import admin_client, delete_topics

from .oracle import expected_routing
from .routekit import RouteEnv, decode_filtered, read_topic


@pytest.fixture
def topic(stack: Any, unique_name: Callable[[str], str]) -> Any:
    name = unique_name("batches")
    admin = admin_client(stack.connections.kafka.to_librdkafka())
    admin.create_topics([NewTopic(name, 3, 1)])[name].result(30)
    yield name
    delete_topics(stack.connections, [name])


def _lane(stack: Any, unique_name: Callable[[str], str], **conf: Any) -> Lane:
    lane = Lane(unique_name("batches-txn"), stack.connections.kafka.producer_conf(**conf), 30.0, 20.0)
    lane.start()
    return lane


def test_a_full_queue_mid_batch_is_waited_out_in_order(
    stack: Any, unique_name: Callable[[str], str], topic: str
) -> None:
    """600 records through a queue of 50: the batch call stops at the full queue, the rest is
    queued once deliveries make room. The oracle is the list written: per key, the same values in
    the same order."""
    lane = _lane(stack, unique_name, **{"queue.buffering.max.messages": 50, "linger.ms": 1})
    sent = [(f"k{i % 7}".encode(), f"{i:05d}".encode()) for i in range(600)]
    lane.begin()
    lane.produce_batches({topic: [{"value": v, "key": k} for k, v in sent]})
    assert lane.deliver(30) == 0
    lane.commit([], lambda _fresh: None)
    got = read_topic(stack.connections.kafka.to_librdkafka(), topic)
    per_key: dict[bytes, list[bytes]] = {}
    for msg in sorted(got, key=lambda m: (m.partition(), m.offset())):
        per_key.setdefault(msg.key(), []).append(msg.value())
    want: dict[bytes, list[bytes]] = {}
    for k, v in sent:
        want.setdefault(k, []).append(v)
    assert per_key == want


def test_a_record_the_client_refuses_raises(
    stack: Any, unique_name: Callable[[str], str], topic: str
) -> None:
    """Not a full queue: the caller aborts and redoes record by record, where refusals are handled."""
    lane = _lane(stack, unique_name, **{"message.max.bytes": 10_000})
    lane.begin()
    msgs = [{"value": b"x" * 100, "key": b"a"}, {"value": b"y" * 20_000, "key": b"b"}]
    with pytest.raises(KafkaException) as info:
        lane.produce_batches({topic: msgs})
    assert info.value.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    lane.abort()


def test_the_router_queueing_per_topic_routes_every_match_once_in_key_order(route_env: RouteEnv) -> None:
    """The engine's batched path (on from 100 filters; here from 1): each topic's records equal the
    independent oracle's, and each key's records keep the raw order."""
    env = route_env
    events = env.produce(0, 3_000)
    opts = RouterOptions(raw_topic=env.raw, group_id=env.prefix + "g", batched_from_filters=1)
    stats = Router(env.filters_path, env.conns, opts).run(max_events=3_000, idle_timeout_s=20)
    assert stats.consumed == 3_000 and stats.dead_lettered == 0
    rank = {e["eventHeader"]["uuid"]: i for i, e in enumerate(events)}
    actual: dict[str, Counter[str]] = {}
    for topic in env.filtered_topics:
        msgs = sorted(read_topic(env.kafka(), topic), key=lambda m: (m.partition(), m.offset()))
        uuids = [decode_filtered(m.value())["eventHeader"]["uuid"] for m in msgs]
        actual[topic] = Counter(uuids)
        per_key: dict[bytes, list[int]] = {}
        for m, u in zip(msgs, uuids, strict=True):
            per_key.setdefault(m.key(), []).append(rank[u])
        assert all(r == sorted(r) for r in per_key.values()), f"{topic}: a key's records out of order"
    assert actual == expected_routing(env.filters_path.read_text(), events, env.filtered_topics)


def test_the_hand_off_flush_does_not_wait_out_a_long_linger(
    stack: Any, unique_name: Callable[[str], str], topic: str
) -> None:
    """From 100 filters the lanes linger 1 s (fewer ProduceRequests while a transaction fills); the
    hand-off's flush must still send at once, or every commit would take a second longer."""
    lane = _lane(stack, unique_name, **{"linger.ms": 1000})
    # first a transaction that learns the new topic's metadata (the router knows its topics)
    lane.begin()
    lane.produce_batches({topic: [{"value": b"first", "key": b"k"}]})
    assert lane.deliver(30) == 0
    lane.commit([], lambda _fresh: None)
    lane.begin()
    lane.produce_batches({topic: [{"value": b"v%d" % i, "key": b"k%d" % i} for i in range(10)]})
    started = time.monotonic()
    assert lane.deliver(30) == 0
    assert time.monotonic() - started < 0.5
    lane.commit([], lambda _fresh: None)
