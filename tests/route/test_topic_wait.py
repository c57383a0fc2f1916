"""The router waits, bounded, for its output topics' metadata before routing.

Right after ``topics apply`` the router's first transaction sometimes aborted with "Unknown topic
or partition" on the new topics, and a router started a moment before them refused to start.
Here the output topics are created two seconds after the router, with a bare ``create_topics``
that does not wait for the metadata to spread: the router must route everything, each event once,
without one aborted transaction.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka.admin import NewTopic

from cdcrouter.route.engine import Router, RouterOptions
from cdcrouter.route.events import bench_filters_yaml
from cdcrouter.schemas.registry import RegistryClient, apply_schemas, desired_subjects, plan_schemas
from cdcrouter.topics import admin_client, topics_for

from .routekit import RouteEnv, write_filters
from .test_router import _actual, _expected

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("kafka", "registry")]


def test_the_router_waits_for_output_topics_created_after_it_started(env: RouteEnv) -> None:
    late = env.unique("late") + "-"
    write_filters(env, bench_filters_yaml(late, 4))
    specs = [s for s in topics_for(env.filters_path, raw_topic=env.raw) if s.name.startswith(late)]
    env.filtered_topics = sorted(s.name for s in specs if s.role == "filtered")
    env.all_topics += [s.name for s in specs]
    with RegistryClient(env.conns.registry.to_client_conf()) as reg:
        apply_schemas(reg, plan_schemas(reg, desired_subjects(env.raw, env.filtered_topics)))
    events = env.produce(0, 500)
    group = env.prefix + "g"
    router = Router(
        env.filters_path, env.conns, RouterOptions(raw_topic=env.raw, group_id=group, instance_id="w")
    )
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(_run(router)), daemon=True)
    thread.start()
    time.sleep(2)
    admin = admin_client(env.kafka())
    futures = admin.create_topics(
        [NewTopic(s.name, s.partitions, s.replication_factor, config=s.config) for s in specs]
    )
    for future in futures.values():
        future.result(30)
    thread.join(120)
    assert not thread.is_alive(), "the router did not finish"
    assert not isinstance(out[0], BaseException), out[0]
    assert out[0].consumed == 500
    assert _actual(env) == _expected(env, events)
    text = router.metrics.registry.get_sample_value(
        "cdcrouter_route_transactions_total", {"outcome": "aborted"}
    )
    assert not text, f"{text} transaction(s) aborted"


def _run(router: Router) -> Any:
    try:
        return router.run(max_events=500, idle_timeout_s=30)
    except BaseException as exc:  # handed to the test
        return exc
