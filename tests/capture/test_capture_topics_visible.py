"""Capture creates its topics, then describes and produces to them at once: it first waits until the
broker's metadata shows them. Under load a KRaft broker applied a new topic 15.7 s after its
controller committed it, and capture failed with "cannot describe topic ... UNKNOWN_TOPIC_OR_PART"."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from cdcrouter.capture.sink import await_topics
from cdcrouter.errors import CaptureError
from cdcrouter.topics import delete_topics

pytestmark = pytest.mark.integration


def test_waits_for_a_topic_that_appears_late(stack: Any, unique_name: Callable[[str], str]) -> None:
    admin = AdminClient(stack.kafka_conf())
    topic = unique_name("late")
    create = threading.Timer(2.0, lambda: admin.create_topics([NewTopic(topic, 1, 1)])[topic].result())
    started = time.monotonic()
    create.start()
    try:
        await_topics(admin, [topic], timeout_s=60)
        took = time.monotonic() - started
        assert took >= 2.0, f"returned after {took:.1f} s, before the topic existed"
        meta = admin.list_topics(topic, timeout=10).topics[topic]
        assert meta.error is None and len(meta.partitions) == 1  # the oracle: the broker's own metadata
    finally:
        create.join()
        delete_topics(stack.connections, [topic])


def test_a_topic_that_never_appears_is_an_error_after_the_bound(
    stack: Any, unique_name: Callable[[str], str]
) -> None:
    admin = AdminClient(stack.kafka_conf())
    topic = unique_name("never")
    started = time.monotonic()
    with pytest.raises(CaptureError, match=f"topic {topic} was created but the broker still does not"):
        await_topics(admin, [topic], timeout_s=2)
    assert time.monotonic() - started < 20
    assert topic not in admin.list_topics(timeout=10).topics  # waiting did not auto-create it
