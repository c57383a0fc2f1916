"""Records no retry can write are dead-lettered once; the router never aborts and redoes them for ever.

Before: a 2 MB raw record (the raw topic accepts 3 MB, the router's producer kept librdkafka's
1 MB) was aborted and redone ten times a second, and its partition never advanced. The same
happened when the broker refused a record (a topic's limit lowered while routing, a record a
compacted topic cannot take). Each test runs the real router on the shared broker and checks the
filtered topics and the DLQ against what the filters say, with a deadline the old code misses.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from cdcrouter.consumer._replay import replay
from cdcrouter.route.engine import Router, RouterOptions, RunStats
from cdcrouter.route.events import encode_raw, event_key, make_event
from cdcrouter.topics import admin_client

from .oracle import Oracle
from .routekit import RouteEnv, read_topic
from .test_router import _actual as actual
from .test_router import _expected as expected

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("kafka", "registry")]


def set_config(env: RouteEnv, topic: str, **config: str) -> None:
    admin = admin_client(env.kafka())
    entries = [
        ConfigEntry(k.replace("_", "."), v, incremental_operation=AlterConfigOpType.SET)
        for k, v in config.items()
    ]
    for future in admin.incremental_alter_configs(
        [ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)]
    ).values():
        future.result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the broker applies it asynchronously
        res = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])
        current = {k: e.value for k, e in next(iter(res.values())).result(30).items()}
        if all(current.get(k.replace("_", ".")) == v for k, v in config.items()):
            return
        time.sleep(0.2)
    raise AssertionError(f"{topic}: {config} not applied in 30 s")


def produce_raw(env: RouteEnv, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = Producer(env.kafka(**{"message.max.bytes": 4_000_000, "enable.idempotence": True}))
    for key, value in records:
        producer.produce(env.raw, value, key)
    assert producer.flush(60) == 0


def big_event(i: int, size: int, filters_text: str) -> dict[str, Any]:
    """An event that some filter matches, with one attribute of ``size`` bytes."""
    oracle = Oracle(filters_text)
    while True:
        event = make_event(i)
        if oracle.matching_ids(event):
            event["eventBody"]["entities"][0]["updatedAttributes"]["note"] = "x" * size
            return event
        i += 1


class Running:
    """The router on a thread; ``result()`` waits for it with a deadline the old code missed."""

    def __init__(self, env: RouteEnv, max_events: int) -> None:
        self.router = Router(
            env.filters_path,
            env.conns,
            RouterOptions(raw_topic=env.raw, group_id=env.prefix + "g", instance_id="t"),
        )
        self.stop = threading.Event()
        self.out: list[Any] = []
        self.thread = threading.Thread(target=self._run, args=(max_events,), daemon=True)
        self.thread.start()

    def _run(self, max_events: int) -> None:
        try:
            self.out.append(self.router.run(self.stop, max_events=max_events))
        except BaseException as exc:  # handed to the test
            self.out.append(exc)

    def result(self, timeout: float) -> RunStats:
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.stop.set()
            self.thread.join(60)
            raise AssertionError(f"the router did not get through its events in {timeout:.0f} s (spinning?)")
        if isinstance(self.out[0], BaseException):
            raise self.out[0]
        return self.out[0]


def test_a_record_larger_than_every_output_topic_is_dead_lettered_by_reference(env: RouteEnv) -> None:
    """The issue's case: 2 MB in a raw topic that takes 3 MB; the filtered topics and the DLQ take
    1 MB. The record goes to the DLQ once, as headers that point at it, and the rest flows."""
    set_config(env, env.raw, max_message_bytes="3145728")
    for topic in [*env.filtered_topics, env.dlq]:  # `topics apply` sizes them for the raw topic now
        set_config(env, topic, max_message_bytes="1048588")
    events = env.produce(0, 150)
    big = big_event(150, 2_000_000, env.filters_path.read_text())
    produce_raw(env, [(event_key(big), encode_raw(big, env.raw_schema_id))])
    events += env.produce(1_000, 150)

    stats = Running(env, max_events=301).result(90)

    assert stats.consumed == 301 and stats.dead_lettered == 1
    assert actual(env) == expected(env, events)  # everything but the big one, each once
    [dead] = read_topic(env.kafka(), env.dlq)
    headers = {k: v.decode() for k, v in dead.headers()}
    assert dead.value() is None  # 2 MB does not fit the DLQ either
    assert "larger than" in headers["cdcrouter.error"]
    assert "left out" in headers["cdcrouter.value.omitted"]
    oracle = Oracle(env.filters_path.read_text())
    assert headers["cdcrouter.filters"] == ",".join(sorted(oracle.matching_ids(big)))
    # the reference leads back to the record
    c = Consumer(env.kafka(**{"group.id": "unused", "fetch.max.bytes": 4_000_000}))
    tp = TopicPartition(
        headers["cdcrouter.source.topic"],
        int(headers["cdcrouter.source.partition"]),
        int(headers["cdcrouter.source.offset"]),
    )
    c.assign([tp])
    msg = c.poll(30)
    c.close()
    assert msg is not None and msg.error() is None and len(msg.value()) > 2_000_000
    # a replay writes the record itself back, read from that position (not a record without a value)
    assert replay(env.conns, env.dlq).replayed == 1
    copies = [m.value() for m in read_topic(env.kafka(), env.raw) if m.key() == event_key(big)]
    assert copies == [msg.value(), msg.value()]


def test_a_change_the_raw_topic_takes_reaches_its_filtered_topics(env: RouteEnv) -> None:
    """`topics apply` sizes the filtered topics and the DLQ for the raw topic's records: a 2 MB
    change, which capture's raw topic takes (8 MiB by default), reaches every filter it matches.
    Before, they kept the broker's 1 MB default and every such change went to the DLQ instead."""
    events = env.produce(0, 50)
    big = big_event(50, 2_000_000, env.filters_path.read_text())
    produce_raw(env, [(event_key(big), encode_raw(big, env.raw_schema_id))])
    events.append(big)

    stats = Running(env, max_events=51).result(90)

    assert stats.consumed == 51 and stats.dead_lettered == 0
    assert actual(env) == expected(env, events)  # the big one too, in each matching topic, once


def test_a_record_the_broker_refuses_after_its_topic_limit_shrank_is_dead_lettered(env: RouteEnv) -> None:
    """The broker-side case: the router read 1 MB at start, the topic now takes 400 kB. The
    transaction fails abortably at the broker; the redo reads the new limit and dead-letters the
    600 kB record (it fits the DLQ, so with its value) for that filter only."""
    events = env.produce(0, 100)
    running = Running(env, max_events=201)
    env.wait_committed(env.prefix + "g", 100)
    big = big_event(100, 600_000, env.filters_path.read_text())
    oracle = Oracle(env.filters_path.read_text())
    fids = sorted(oracle.matching_ids(big))
    shrunk = oracle.topic_of(fids[0])
    set_config(env, shrunk, max_message_bytes="400000")
    big_value = encode_raw(big, env.raw_schema_id)
    produce_raw(env, [(event_key(big), big_value)])
    events += env.produce(1_000, 100)

    stats = running.result(90)

    assert stats.consumed == 201 and stats.dead_lettered == 1
    want = expected(env, events)
    for fid in fids[1:]:  # the other filters still get it
        want[oracle.topic_of(fid)][big["eventHeader"]["uuid"]] += 1
    assert actual(env) == want
    [dead] = read_topic(env.kafka(), env.dlq)
    headers = {k: v.decode() for k, v in dead.headers()}
    assert dead.value() == big_value
    assert headers["cdcrouter.filters"] == fids[0]
    assert f"larger than {shrunk} accepts (400000" in headers["cdcrouter.error"]


def test_a_record_a_compacted_topic_refuses_is_dead_lettered_for_that_filter(env: RouteEnv) -> None:
    """A record the broker refuses for another reason (no key, compacted topic: INVALID_RECORD):
    the redo watches every delivery, finds the record and dead-letters it once."""
    events = env.produce(0, 100)
    running = Running(env, max_events=201)
    env.wait_committed(env.prefix + "g", 100)
    oracle = Oracle(env.filters_path.read_text())
    keyless = make_event(100)
    keyless["eventHeader"]["eventName"] = "LoanCreated"
    keyless["eventBody"]["entities"] = []  # the router's key falls back to the raw key: none
    fids = sorted(oracle.matching_ids(keyless))
    assert fids, "the keyless event must match a filter"
    compacted = oracle.topic_of(fids[0])
    set_config(env, compacted, cleanup_policy="compact")
    value = encode_raw(keyless, env.raw_schema_id)
    produce_raw(env, [(None, value)])
    env.wait_committed(env.prefix + "g", 101, timeout=90)  # alone in its batch: no neighbour refused with it
    events += env.produce(1_000, 100)

    stats = running.result(90)

    assert stats.consumed == 201 and stats.dead_lettered == 1
    want = expected(env, events)
    for fid in fids[1:]:
        want[oracle.topic_of(fid)][keyless["eventHeader"]["uuid"]] += 1
    assert actual(env) == want
    [dead] = read_topic(env.kafka(), env.dlq)
    headers = {k: v.decode() for k, v in dead.headers()}
    assert dead.value() == value and headers["cdcrouter.filters"] == fids[0]
    assert "INVALID_RECORD" in headers["cdcrouter.error"]
