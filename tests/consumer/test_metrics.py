"""Backoff timing and the Prometheus endpoint, on the real broker."""

from __future__ import annotations

import itertools
import socket
import time
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cdcrouter.consumer import ConsumerApp, MemoryStore

from .conftest import event

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_backoff_doubles_and_metrics_are_served(conns, topic, produce) -> None:
    src = topic(partitions=2)
    uuids = produce(src, [event("LoanCreated", f"L-{i}") for i in range(3)])
    produce(src, [event("LoanCreated", "L-0", uuid=uuids[0])])  # a redelivery of the first event
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    port = _free_port()
    tries: list[tuple[int, float]] = []
    app = ConsumerApp(name, conns, group=name, retries=3, backoff=0.2, metrics_port=port, store=MemoryStore())

    @app.on(src)
    def flaky(ev, ctx):
        if ev.uuid == uuids[1]:
            tries.append((ctx.attempt, time.monotonic()))
            if ctx.attempt < 3:
                raise ConnectionError("db busy")

    stats = app.run(timeout=60, max_messages=4)
    assert (stats.processed, stats.duplicates, stats.failed, stats.retried, stats.dead_lettered) == (
        3,
        1,
        2,
        2,
        0,
    )
    assert [a for a, _ in tries] == [1, 2, 3]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(tries)]
    assert 0.2 <= gaps[0] < 1.5 and 0.4 <= gaps[1] < 2.5  # 0.2 s, then doubled (loose upper bounds for CI)

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples = {
        (s.name, s.labels.get("partition")): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.labels.get("consumer") == name
    }
    assert samples[("cdcrouter_consumer_processed_total", None)] == 3
    assert samples[("cdcrouter_consumer_duplicates_total", None)] == 1
    assert samples[("cdcrouter_consumer_failed_total", None)] == 2
    assert samples[("cdcrouter_consumer_retried_total", None)] == 2
    lags = {p: v for (n, p), v in samples.items() if n == "cdcrouter_consumer_lag"}
    assert lags and set(lags.values()) == {0}
