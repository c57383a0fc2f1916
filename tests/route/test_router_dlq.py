"""The router's dead-letter topic through ``cdcrouter dlq list|replay``.

The router writes its DLQ inside its transactions, so the topic's offsets hold commit markers
(and here an aborted transaction at the tail). Listing must end and count records, not offsets;
a replay must put each record back in the partition the router read it from (same key, same
partitioner: murmur2, as the writer of the raw topic used).
"""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka import Producer

from cdcrouter.cli.main import main
from cdcrouter.route.engine import Router, RouterOptions

from .routekit import RouteEnv, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("kafka", "registry")]

POISON = [(f"L-poison-{i}".encode(), f"not avro {i}".encode()) for i in range(12)]


def _abort_a_transaction(env: RouteEnv) -> None:
    p = Producer(env.kafka(**{"transactional.id": f"t-rdlq-{uuid.uuid4().hex[:8]}"}))
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(env.dlq, key=b"aborted", value=b"never committed")
    p.flush(30)
    p.abort_transaction(30)


def test_dlq_list_and_replay_read_the_routers_transactional_dlq(route_env: RouteEnv, capsys) -> None:
    env = route_env
    env.produce(0, 30, extra=POISON)
    stats = Router(
        env.filters_path, env.conns, RouterOptions(raw_topic=env.raw, group_id=env.prefix + "g")
    ).run(max_events=30 + len(POISON), idle_timeout_s=20)
    assert stats.dead_lettered == len(POISON)
    _abort_a_transaction(env)
    # The oracle: a plain read_committed read of the DLQ (test helper, not the code under test).
    oracle = {m.key(): m for m in read_topic(env.kafka(), env.dlq)}
    assert sorted(oracle) == sorted(k for k, _ in POISON)

    assert main(["dlq", "list", "--format", "json"]) == 0
    counts = {d["topic"]: d["records"] for d in json.loads(capsys.readouterr().out)}
    assert counts[env.dlq] == len(POISON)  # records, not offsets (markers and the aborted one)

    assert main(["dlq", "list", env.dlq, "--format", "json", "--max", "100"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == len(POISON)
    for line in lines:
        m = oracle[line["key"].encode()]
        h = dict(m.headers())
        assert (line["topic"], line["partition"], line["offset"]) == (env.dlq, m.partition(), m.offset())
        assert line["source_topic"] == env.raw
        assert line["source_partition"] == int(h["cdcrouter.source.partition"])
        assert line["source_offset"] == int(h["cdcrouter.source.offset"])
        assert "unknown magic byte" in line["error"]

    # Back to the raw topic: every record lands in the partition it was dead-lettered from.
    assert main(["dlq", "replay", env.dlq]) == 0
    assert f"replayed {len(POISON)} record(s) ({env.raw}: {len(POISON)})" in capsys.readouterr().out
    replayed = [
        m for m in read_topic(env.kafka(), env.raw) if "cdcrouter.replay.from" in dict(m.headers() or [])
    ]
    assert sorted(m.key() for m in replayed) == sorted(k for k, _ in POISON)
    got = {m.key(): m.partition() for m in replayed}
    want = {k: int(dict(m.headers())["cdcrouter.source.partition"]) for k, m in oracle.items()}
    assert got == want
    assert len(set(want.values())) > 1  # the keys spread: the check could tell partitioners apart

    assert main(["dlq", "replay", env.dlq]) == 0
    assert f"replayed 0 record(s) (-); skipped {len(POISON)} already replayed" in capsys.readouterr().out
