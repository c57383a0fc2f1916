"""Replay (backfill) of one filter, by offset and by timestamp, without touching the live group."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, TopicPartition

from cdcrouter.errors import UsageError
from cdcrouter.route.replay import Position, parse_position, replay

from .routekit import RouteEnv, decode_filtered, read_topic
from .test_router import _expected

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("kafka", "registry")]


def test_parse_position() -> None:
    assert parse_position("120") == Position(offset=120)
    assert parse_position("ts:1764000000000") == Position(timestamp_ms=1764000000000)
    assert parse_position("2025-11-24T16:00:00Z") == Position(timestamp_ms=1764000000000)
    with pytest.raises(UsageError):
        parse_position("yesterday")


def test_replay_one_filter_by_offset_then_by_time(route_env: RouteEnv) -> None:
    env = route_env
    topic = env.prefix + "loan-created"
    a = env.produce(0, 1_000)
    time.sleep(1.0)
    t_split = time.time_ns() // 1_000_000
    time.sleep(0.2)
    b = env.produce(1_000, 1_000)

    result = replay(env.filters_path, "loan-created", env.conns, env.raw, Position(offset=0))
    assert result.scanned == 2_000 and result.topic == topic
    got = Counter(decode_filtered(m.value())["eventHeader"]["uuid"] for m in read_topic(env.kafka(), topic))
    assert got == _expected(env, a + b)[topic]
    metas = {decode_filtered(m.value())["filterMetadata"]["filterId"] for m in read_topic(env.kafka(), topic)}
    assert metas == {"loan-created"}
    # no other topic was written, and no consumer group committed anything for the raw topic
    assert read_topic(env.kafka(), env.prefix + "car-sold") == []
    c = Consumer(env.kafka(**{"group.id": env.prefix + "g"}))
    assert all(
        tp.offset < 0 for tp in c.committed([TopicPartition(env.raw, p) for p in range(3)], timeout=10)
    )
    c.close()

    # by time: only the second half is routed again
    result = replay(env.filters_path, "loan-created", env.conns, env.raw, Position(timestamp_ms=t_split))
    assert result.scanned == 1_000
    got2 = Counter(decode_filtered(m.value())["eventHeader"]["uuid"] for m in read_topic(env.kafka(), topic))
    assert got2 == got + _expected(env, b)[topic]


def test_replay_unknown_filter_is_a_usage_error(route_env: RouteEnv) -> None:
    with pytest.raises(UsageError, match="no enabled filter 'nope'"):
        replay(route_env.filters_path, "nope", route_env.conns, route_env.raw, Position(offset=0))
