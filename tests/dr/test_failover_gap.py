"""``dr failover`` with region A reachable and a mirror that has not copied A's records: it waits
(bounded), refuses with the gap per partition counted from A's committed records, and starts the
stopped processes again where they were; with ``--force`` it goes on and reports the same gap.
The mirror here is a flow whose MM2 never ran (an alias no MM2 uses), so nothing is copied: the
oracle is the number of records the test committed into A."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from cdcrouter.consumer import _kafka
from cdcrouter.dr.failover import FailoverPlan, failover
from cdcrouter.dr.mirror import MirrorMaker, MirrorSpec
from cdcrouter.dr.processes import ProcessRegistry, stop_all
from cdcrouter.errors import DrError


def test_failover_refuses_with_the_gap_and_restarts_in_place(
    stack, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    conns = stack.connections
    topic = unique_name("gap")
    _kafka.ensure_topic(conns, topic, partitions=2)
    producer = Producer(conns.kafka.producer_conf())
    for i in range(7):
        producer.produce(topic, key=f"k{i}", value=b"x", partition=i % 2)  # 4 on partition 0, 3 on 1
    assert producer.flush(30) == 0
    spec = MirrorSpec(source=conns.kafka, target=conns.kafka, topics=(topic,), source_alias=f"{topic}-a")
    procs = ProcessRegistry(tmp_path / "processes")
    first = procs.launch("app", "consumer", ["sleep", "120"], "a", {})
    plan = FailoverPlan(
        source="a",
        target="b",
        source_conns=conns,
        target_conns=conns,
        procs=procs,
        mirror=MirrorMaker(spec, tmp_path / "mirror"),
        catch_up_s=2.0,
        stop_grace_s=5.0,
        record=False,
    )
    said: list[str] = []
    try:
        with pytest.raises(DrError) as refused:
            failover(plan, say=said.append)
        assert f"{topic}/0: 4 record(s) behind" in refused.value.message
        assert f"{topic}/1: 3 record(s) behind" in refused.value.message
        again = procs.get("app")
        assert again is not None and again.region == "a" and again.alive() and again.pid != first.pid
        assert not first.alive()
        assert any("started again in a" in line for line in said)

        plan.force = True
        result = failover(plan, say=said.append)
        assert result.gap == {f"{topic}/0": 4, f"{topic}/1": 3}
        moved = procs.get("app")
        assert moved is not None and moved.region == "b" and moved.alive() and not again.alive()
    finally:
        stop_all(procs.all(), grace_s=5)
