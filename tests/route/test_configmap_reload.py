"""Live filter reload through a Kubernetes ConfigMap volume (the Helm chart's promise,
docs/operations.md "Run on Kubernetes"): the kubelet never rewrites ``filters.yaml`` in place. It
writes the new files into a new hidden directory and swaps the ``..data`` symlink that
``filters.yaml -> ..data/filters.yaml`` goes through, then deletes the old directory. The router
must follow that swap. The layout is the kubelet's atomic writer's, made here by hand.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cdcrouter.route.engine import Router, RouterOptions
from cdcrouter.route.events import bench_filters_yaml

from .oracle import expected_routing
from .routekit import RouteEnv, decode_filtered, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("kafka", "registry")]


def publish(volume: Path, version: str, text: str) -> None:
    """What the kubelet does on a ConfigMap update: new timestamped dir, atomic ..data swap."""
    data_dir = volume / f"..2026_12_06_{version}"
    data_dir.mkdir()
    (data_dir / "filters.yaml").write_text(text)
    old = os.readlink(volume / "..data") if (volume / "..data").is_symlink() else None
    (volume / "..data_tmp").symlink_to(data_dir.name)
    os.replace(volume / "..data_tmp", volume / "..data")
    if not (volume / "filters.yaml").is_symlink():
        (volume / "filters.yaml").symlink_to("..data/filters.yaml")
    if old is not None:
        for f in (volume / old).iterdir():
            f.unlink()
        (volume / old).rmdir()


def test_router_reloads_filters_when_the_configmap_volume_is_updated(
    route_env: RouteEnv, tmp_path: Path
) -> None:
    env = route_env
    volume = tmp_path / "config"
    volume.mkdir()
    v1 = bench_filters_yaml(env.prefix, 1)
    v2 = bench_filters_yaml(env.prefix, 8)
    publish(volume, "v1", v1)
    group = env.prefix + "g"
    router = Router(
        volume / "filters.yaml",
        env.conns,
        RouterOptions(raw_topic=env.raw, group_id=group, reload_check_ms=100),
    )
    stop = threading.Event()
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(router.run(stop)), daemon=True)
    t.start()
    try:
        a = env.produce(0, 500)
        env.wait_committed(group, 500)
        publish(volume, "v2", v2)
        deadline = time.monotonic() + 30
        while router._table is None or len(router._table.routes) != 8:
            assert time.monotonic() < deadline, "the ConfigMap update was not reloaded"
            time.sleep(0.05)
        b = env.produce(500, 500)
        env.wait_committed(group, 1_000)
    finally:
        stop.set()
        t.join(60)
    assert result, "router did not stop"
    # oracle: the independent filter evaluator, v1 before the swap and v2 after it
    expected = expected_routing(v1, a, env.filtered_topics)
    for topic, counts in expected_routing(v2, b, env.filtered_topics).items():
        expected[topic] += counts
    actual = {
        topic: Counter(
            decode_filtered(m.value())["eventHeader"]["uuid"] for m in read_topic(env.kafka(), topic)
        )
        for topic in env.filtered_topics
    }
    assert actual == expected
    applied = router.metrics.registry.get_sample_value(
        "cdcrouter_route_filter_reloads_total", {"outcome": "applied"}
    )
    assert applied == 1
