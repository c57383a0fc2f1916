"""``read_offsets`` on an offsets topic that does not exist answers "no position" at once.

Before, the partition of a missing topic was assigned and polled: librdkafka reports no error for
it, so the read waited out its whole timeout (30-60 s for the engine, ``dr backup`` and
``dr failover``) and then failed with "timed out reading the committed capture position". Every
caller means "capture has committed nothing yet" by None (capture creates the topic on its first
run), so that is the answer. The oracle for "does not exist" is the broker's own metadata.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from cdcrouter.capture.pipeline import RawTopic
from cdcrouter.capture.sink import Offsets, ensure_topics, read_offsets

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("kafka", "registry")]


def test_a_missing_offsets_topic_means_no_position_at_once(
    stack: Any, unique_name: Callable[[str], str]
) -> None:
    conns = stack.connections
    topic = unique_name("no-such-offsets")
    assert topic not in AdminClient(conns.kafka.to_librdkafka()).list_topics(timeout=10).topics
    began = time.monotonic()
    assert read_offsets(conns, topic, "slot", timeout_s=60) is None
    assert time.monotonic() - began < 10, "waited on a topic that does not exist"


def test_an_existing_offsets_topic_is_still_read(stack: Any, unique_name: Callable[[str], str]) -> None:
    conns = stack.connections
    raw = RawTopic(name=unique_name("raw-offsets"), partitions=1)
    ensure_topics(conns, raw)
    try:
        assert read_offsets(conns, raw.offsets_topic, "s1", timeout_s=30) is None  # empty: nothing yet
        producer = Producer(conns.kafka.producer_conf())
        producer.produce(raw.offsets_topic, Offsets(commit_lsn=7, end_lsn=8).to_json(), b"s1", partition=0)
        assert producer.flush(30) == 0
        got = read_offsets(conns, raw.offsets_topic, "s1", timeout_s=30)
        assert got is not None and (got.commit_lsn, got.end_lsn) == (7, 8)
    finally:
        from cdcrouter.topics import delete_topics

        delete_topics(conns, [raw.name, raw.offsets_topic, raw.dlq_topic])
