"""An output topic deleted while routing stops the router at once, naming the topic and its filter.

Before: hundreds of "Unknown topic" aborts, every partition and filter stalled, and nothing said
why. The router now stops with a clear error (the raw offsets are shared by all filters, so one
filter cannot be paused without stalling or losing; see docs/routing.md). After the topic is
recreated, a restarted router resumes from the committed offsets: every other filter's topic
holds each event exactly once.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from cdcrouter.errors import RouteError
from cdcrouter.route.engine import Router, RouterOptions
from cdcrouter.route.filterset import compile_filters_text
from cdcrouter.topics import admin_client, apply_topics, plan_topics, topics_for
from cdcrouter.topics import delete_topics as delete

from .routekit import RouteEnv
from .test_router import _actual, _expected

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("kafka", "registry")]


def test_a_deleted_output_topic_stops_the_router_with_its_name_and_filter(env: RouteEnv) -> None:
    group = env.prefix + "g"
    opts = RouterOptions(raw_topic=env.raw, group_id=group, instance_id="d")
    router = Router(env.filters_path, env.conns, opts)
    out: list[Any] = []
    stop = threading.Event()

    def run() -> None:
        try:
            out.append(router.run(stop))
        except BaseException as exc:  # handed to the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    events = env.produce(0, 300)
    env.wait_committed(group, 300)
    cf = compile_filters_text(env.filters_path.read_text())
    fid = "loan-created"
    gone = cf.routes[fid].topic
    delete(env.conns, [gone])
    admin = admin_client(env.kafka())
    deadline = time.monotonic() + 30
    while gone in admin.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, f"{gone} still listed 30 s after its deletion"
        time.sleep(0.2)
    events += env.produce(300, 300)
    began = time.monotonic()
    thread.join(90)
    stopped_after = time.monotonic() - began
    if thread.is_alive():
        stop.set()
        thread.join(60)
        pytest.fail("the router went on (or stalled) for 90 s after its output topic was deleted")
    assert isinstance(out[0], RouteError), out[0]
    assert gone in out[0].message and f"filter {fid}" in out[0].message
    assert "topics apply" in (out[0].hint or "")
    assert stopped_after < 60

    # the topic is back: a restarted router resumes, and every other topic holds each event once
    apply_topics(admin, plan_topics(admin, topics_for(env.filters_path, raw_topic=env.raw)))
    again = Router(env.filters_path, env.conns, opts)
    again.run(max_events=600 - env.committed(group), idle_timeout_s=30)
    assert env.committed(group) == 600
    actual, expected = _actual(env), _expected(env, events)
    for topic in env.filtered_topics:
        if topic != gone:
            assert actual[topic] == expected[topic], topic
    assert all(n == 1 for n in actual[gone].values())  # what came after the deletion, once
