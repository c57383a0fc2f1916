"""`stack up` warms a just-started broker: the internal topics exist when it returns, the warm-up
ran (its transactions and its reader), and it left neither its topic nor its group behind. The
broker compiles with the default JIT mode's compilers only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from cdcrouter.errors import StackError
from cdcrouter.stack.services.kafka import JIT_ENV, Kafka
from cdcrouter.stack.warmup import (
    ENV_SWITCH,
    INTERNAL_TOPICS,
    LIMIT_ENV,
    WARMUP_GROUP,
    WARMUP_TOPIC,
    compiler_cpu_s,
    compiler_threads,
)
from cdcrouter_testing.stack_fixtures import private_service

pytestmark = pytest.mark.integration


@pytest.fixture
def warmed_kafka(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A private broker started with the warm-up traffic on (the test plugin turns it off), for at
    most 3 s: its transactions and reader still run, only the wait for the JIT is cut short."""
    monkeypatch.setenv(ENV_SWITCH, "1")
    monkeypatch.setenv(LIMIT_ENV, "3")
    monkeypatch.delenv(JIT_ENV, raising=False)  # the default JIT mode
    with private_service("kafka", ("kafka", "kafka-controller")) as own:
        yield own


def test_stack_up_creates_internal_topics_and_warms_the_broker(warmed_kafka: Any) -> None:
    private_kafka = warmed_kafka
    admin = AdminClient(private_kafka.connections().kafka.to_librdkafka())
    topics = admin.list_topics(timeout=30).topics
    # on a fresh broker these only appear with the first transaction and the first group: before
    # the warm-up, the demo's first changes waited seconds for their creation
    for internal in INTERNAL_TOPICS:
        assert internal in topics, f"{internal} missing right after stack up"
    # the warm-up's stream really ran: its reader's group committed offsets in its transactions
    # (so __consumer_offsets holds data), and its transactions wrote __transaction_state
    hw = {t: _records(private_kafka, t, len(topics[t].partitions)) for t in INTERNAL_TOPICS}
    assert hw["__transaction_state"] > 0 and hw["__consumer_offsets"] > 0, hw
    assert WARMUP_TOPIC not in topics
    groups = admin.list_consumer_groups(request_timeout=30).result()
    assert WARMUP_GROUP not in {g.group_id for g in groups.valid}
    # the wait for the broker's JIT reads its compiler threads: it must find them
    rec = private_kafka.running_record("kafka")
    assert rec is not None
    used = compiler_cpu_s(rec.pid)
    assert used is not None and used > 0
    # the default mode (C1 only: docs/operations.md) runs no C2 compiler thread; tiered would
    threads = compiler_threads(rec.pid)
    assert threads is not None and {name[:2] for name, _ in threads} == {"C1"}, threads


def test_an_unknown_jit_mode_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(JIT_ENV, "c3")
    with pytest.raises(StackError) as err:
        Kafka().jit_opts()
    assert "c1, tiered" in (err.value.hint or "")
    monkeypatch.setenv(JIT_ENV, "C1")
    assert Kafka().jit_opts()[0] == "-XX:TieredStopAtLevel=1"


def _records(stack: Any, topic: str, partitions: int) -> int:
    """The sum of the end offsets of ``topic``'s partitions."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({**stack.connections().kafka.to_librdkafka(), "group.id": "warmup-test-reader"})
    try:
        ends = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in range(partitions)]
        return sum(ends)
    finally:
        c.close()
