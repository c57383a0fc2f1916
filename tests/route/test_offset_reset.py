"""An abort before the first commit goes back to where routing began, as ``auto.offset.reset`` says.

Before, the rewind after an abort sent a partition without committed offsets to its beginning:
a router started with ``latest`` then routed the whole history it was told to skip.
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Producer

from cdcrouter.route.engine import Router, RouterOptions

from .routekit import RouteEnv
from .test_router import _actual, _expected

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("kafka", "registry")]


def test_an_abort_before_the_first_commit_keeps_auto_offset_reset_latest(env: RouteEnv) -> None:
    env.produce(0, 300)  # history a router started with "latest" must not route
    group = env.prefix + "g"
    router = Router(
        env.filters_path,
        env.conns,
        RouterOptions(raw_topic=env.raw, group_id=group, instance_id="r", auto_offset_reset="latest"),
    )
    stop = threading.Event()
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(router.assigned) < 3:
            assert time.monotonic() < deadline, "the router was not assigned the raw topic's partitions"
            time.sleep(0.1)
        time.sleep(2)  # its positions are resolved at assignment
        # another producer with the router's ids fences both lanes: the first transaction aborts
        for tid in router.opts.transactional_ids:
            Producer(env.kafka(**{"transactional.id": tid})).init_transactions(30)
        events = env.produce(1_000, 200)
        env.wait_committed(group, 300 + 200)  # the end offsets: 300 skipped, 200 routed
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    assert router._recoveries, "the fence did not make the router abort"
    assert _actual(env) == _expected(env, events)  # the new events once, none of the history
    assert router.metrics.consumed == 200
