"""The capture tests' clean-up really deletes their topics: it once asked a throw-away AdminClient,
whose destruction cancelled the deletes (``_DESTROY``), so every capture test left three topics on
the shared broker for the rest of the session; and waited ``result(timeout=20)`` on each of the
three cancelled futures, which under load never resolved: teardowns of exactly 60 s."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from capture_helpers import drop_capture_objects, make_pipeline
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = pytest.mark.integration


def test_drop_capture_objects_deletes_the_pipeline_topics(
    stack: Any, unique_name: Callable[[str], str]
) -> None:
    conns = stack.connections
    name = unique_name("cln")
    pipeline = make_pipeline(name.replace("-", "_"), name)
    raw = pipeline.raw_topic
    topics = [raw.name, raw.offsets_topic, raw.dlq_topic]
    admin = AdminClient(conns.kafka.to_librdkafka())
    for fut in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        fut.result(30)

    drop_capture_objects(conns, pipeline, None)

    deadline = time.monotonic() + 30  # deleted topics leave the metadata a moment later
    while (left := set(topics) & set(admin.list_topics(timeout=15).topics)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"still on the broker after the clean-up: {sorted(left)}"


def test_a_topic_named_twice_is_deleted_too(stack: Any, unique_name: Callable[[str], str]) -> None:
    """test_capture_parity's clean-up names the Debezium offsets topic twice: the broker refused that
    name (INVALID_REQUEST) and the topic stayed; with a missing topic too the process crashed."""
    from cdcrouter.topics import delete_topics

    conns = stack.connections
    name = unique_name("dup")
    topics = [name, f"{name}.offsets"]
    admin = AdminClient(conns.kafka.to_librdkafka())
    for fut in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        fut.result(30)

    delete_topics(conns, [*topics, topics[1]])

    deadline = time.monotonic() + 30
    while (left := set(topics) & set(admin.list_topics(timeout=15).topics)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"still on the broker after delete_topics: {sorted(left)}"
