"""``cdcrouter replay`` over a raw topic written in transactions, as the capture engine writes it.

Its offsets hold commit markers and, here, an aborted transaction at the tail: the replay must
finish, scan only committed events, and put every event in the partition the live router put it
in (one partitioner for both).
"""

from __future__ import annotations

import uuid
from collections import defaultdict

import pytest
from confluent_kafka import Producer

from cdcrouter.route.engine import Router, RouterOptions
from cdcrouter.route.events import encode_raw, event_key, make_event
from cdcrouter.route.replay import Position, replay

from .routekit import RouteEnv, decode_filtered, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("kafka", "registry")]


def _write_in_transactions(env: RouteEnv, committed: int, aborted: int) -> None:
    """Two committed transactions of events 0..committed-1, then an aborted one at the tail."""
    p = Producer(env.conns.kafka.producer_conf(**{"transactional.id": f"t-rawtx-{uuid.uuid4().hex[:8]}"}))
    p.init_transactions(30)
    half = committed // 2
    for first, last, commit in (
        (0, half, True),
        (half, committed, True),
        (committed, committed + aborted, False),
    ):
        p.begin_transaction()
        for i in range(first, last):
            ev = make_event(i, 7)
            p.produce(env.raw, encode_raw(ev, env.raw_schema_id), event_key(ev))
        p.flush(30)
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)


def test_replay_of_a_transactional_raw_topic_matches_the_routers_partitions(route_env: RouteEnv) -> None:
    env = route_env
    _write_in_transactions(env, committed=400, aborted=50)
    Router(env.filters_path, env.conns, RouterOptions(raw_topic=env.raw, group_id=env.prefix + "g")).run(
        max_events=400, idle_timeout_s=20
    )
    topic = env.prefix + "loan-created"
    live = read_topic(env.kafka(), topic)
    assert live, "the filter matched nothing: the test would prove nothing"

    result = replay(env.filters_path, "loan-created", env.conns, env.raw, Position(offset=0))
    assert result.scanned == 400  # the aborted tail is neither scanned nor waited for
    partitions: dict[str, set[int]] = defaultdict(set)
    copies: dict[str, int] = defaultdict(int)
    for m in read_topic(env.kafka(), topic):
        uid = decode_filtered(m.value())["eventHeader"]["uuid"]
        partitions[uid].add(m.partition())
        copies[uid] += 1
    assert set(copies.values()) == {2}  # the router's copy and the replay's
    assert all(len(ps) == 1 for ps in partitions.values()), "a replayed event left its entity's partition"
    assert len({p for ps in partitions.values() for p in ps}) > 1
