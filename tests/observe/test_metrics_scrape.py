"""Metrics, /healthz and /readyz of a real running capture, router and consumer app (in-process on
the shared stack): the counters agree with what was written to PostgreSQL and read from Kafka, and
every metric the shipped dashboard and alert rules use is in the scrapes."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cdcrouter.capture import CaptureEngine, load_pipeline
from cdcrouter.consumer import ConsumerApp, Event

from .monitoring_files import used_metric_names
from .statuskit import StatusEnv

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("postgres", "kafka", "registry")]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape(port: int) -> Samples:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def _get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)


def _status(port: int, path: str) -> int | None:
    """The HTTP status, ``None`` while nothing listens yet."""
    try:
        return _get(port, path).status_code
    except httpx.TransportError:
        return None


def _wait(what: str, ok: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_capture_router_and_consumer_serve_metrics_health_and_readiness(status_env: StatusEnv) -> None:
    env = status_env
    from cdcrouter.route.engine import Router, RouterOptions

    capture = CaptureEngine(load_pipeline(env.pipeline_file), env.conns, progress=lambda _m: None)
    capture.metrics.serve(0)
    cport = capture.metrics.port
    assert cport is not None
    assert _get(cport, "/healthz").status_code == 200  # alive before it streams ...
    not_yet = _get(cport, "/readyz")
    assert not_yet.status_code == 503, not_yet.text  # ... but not ready
    env._start("capture", capture.run, capture.ready.is_set)
    assert _get(cport, "/readyz").status_code == 200

    opts = RouterOptions(raw_topic=env.raw, group_id=env.group, instance_id=env.name, reload=False)
    router = Router(env.filters_file, env.conns, opts)
    router.metrics.serve(0)
    rport = router.metrics.server.port
    assert _get(rport, "/readyz").status_code == 503  # not assigned yet
    env._start("router", router.run, lambda: env.members(env.group) > 0)
    _wait("router /readyz", lambda: _get(rport, "/readyz").status_code == 200)

    cars = f"{env.name}-cars"
    app_port = _free_port()
    app = ConsumerApp(
        "fleet", env.conns, group=f"{env.name}-fleet", metrics_port=app_port, batch_timeout=0.2, retries=0
    )
    handled: list[Event] = []

    @app.on(cars)
    def handle(event: Event) -> None:
        if event.name == "CarCreated" and event.entity.entity_id == "C1":
            raise ValueError("poison")  # no retries: dead-lettered at once
        handled.append(event)

    app_thread = threading.Thread(target=app.run, daemon=True)
    app_thread.start()
    try:
        _wait("consumer app /readyz", lambda: _status(app_port, "/readyz") == 200)

        n = 6
        env.insert_cars(n)  # n CarCreated + n CarUpdated: 2n changes, 2n to cars, n to car-updates
        env.wait_count(cars, 2 * n)
        env.wait_count(f"{env.name}-car-updates", n)
        _wait("consumer handled", lambda: len(handled) >= 2 * n - 1)

        # Capture: the counters are its own, the slot's state comes from PostgreSQL at scrape time.
        _wait("capture counted", lambda: _value(_scrape(cport), "cdcrouter_capture_changes_total") >= 2 * n)
        cap = _scrape(cport)
        assert _value(cap, "cdcrouter_capture_changes_total") == 2 * n
        with psycopg.connect(env.conns.postgres.conninfo()) as conn:
            row = conn.execute(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", (env.slot,)
            ).fetchone()
        assert row is not None
        assert _value(cap, "cdcrouter_capture_slot_wal_status", wal_status=row[0]) == 1
        assert sum(v for (name, _), v in cap.items() if name == "cdcrouter_capture_slot_wal_status") == 1
        assert ("cdcrouter_capture_slot_retained_wal_bytes", frozenset()) in cap
        assert _value(cap, "cdcrouter_capture_kafka_commit_seconds_count") >= 1

        # Router: per filter what the filtered topics hold (read back from Kafka), one latency
        # observation per routed record, and its lag once it caught up.
        _wait(
            "router counted",
            lambda: _value(_scrape(rport), "cdcrouter_route_matched_total", filter_id="car-updates") >= n,
        )
        routed = _scrape(rport)
        in_kafka = env.count(cars)
        assert _value(routed, "cdcrouter_route_matched_total", filter_id="cars", topic=cars) == in_kafka
        assert _value(routed, "cdcrouter_route_matched_total", filter_id="car-updates") == n
        for fid, expected in (("cars", 2 * n), ("car-updates", n)):
            count = _value(routed, "cdcrouter_route_e2e_latency_seconds_count", filter_id=fid)
            assert count == expected, (fid, count)
            # source commit -> routed is positive and, on this idle stack, well under a minute
            assert 0 < _value(routed, "cdcrouter_route_e2e_latency_seconds_sum", filter_id=fid) < 60 * count
        _wait("router lag 0", lambda: _lag_zero(rport, env.raw))
        routed = _scrape(rport)  # the lag gauges are set once a second: the names check sees them now

        _wait(  # the counters move just after the handler returns (and the DLQ write is acknowledged)
            "consumer counted",
            lambda: (
                _value(_scrape(app_port), "cdcrouter_consumer_processed_total") >= 2 * n - 1
                and _value(_scrape(app_port), "cdcrouter_consumer_dead_lettered_total") >= 1
            ),
        )
        app_samples = _scrape(app_port)
        assert _value(app_samples, "cdcrouter_consumer_processed_total", consumer="fleet") == 2 * n - 1
        assert _value(app_samples, "cdcrouter_consumer_dead_lettered_total", consumer="fleet") == 1

        # Every metric the dashboard and the alert rules use exists in one of the scrapes.
        scraped = {name for samples in (cap, routed, app_samples) for name, _ in samples}
        missing = {name: where for name, where in used_metric_names().items() if name not in scraped}
        assert not missing, f"used by the monitoring files but not exported: {missing}"
        assert len(used_metric_names()) >= 10  # the parse found the expressions' names at all

        # A stopped capture stays alive for /healthz but is not ready.
        env.halt("capture")
        assert _get(cport, "/healthz").status_code == 200
        stopped = _get(cport, "/readyz")
        assert stopped.status_code == 503 and "not connected" in stopped.text
    finally:
        app.stop()
        app_thread.join(30)
        capture.metrics.close()
    env.halt("router")
    done = _get(rport, "/readyz")  # the endpoint outlives run() (a last scrape), not ready
    assert done.status_code == 503 and "stopped" in done.text
    router.metrics.close()


def _lag_zero(port: int, raw: str) -> bool:
    samples = _scrape(port)
    lags = [v for (name, ls), v in samples.items() if name == "cdcrouter_route_lag" and ("topic", raw) in ls]
    # the raw topic has 2 partitions, both owned by the one router; commit markers count as an offset
    return len(lags) == 2 and all(v <= 1 for v in lags)


def test_router_lag_is_reported_by_the_owner_of_each_partition_only(status_env: StatusEnv) -> None:
    """Two routers split the raw topic's 2 partitions: each reports the lag of its own; when one
    stops, the other takes both and the leaver's gauges went with its partitions."""
    env = status_env
    from cdcrouter.route.engine import Router, RouterOptions

    routers = {}
    for instance in ("a", "b"):
        opts = RouterOptions(raw_topic=env.raw, group_id=env.group, instance_id=f"{env.name}-{instance}")
        router = Router(env.filters_file, env.conns, opts)
        router.metrics.serve(0)
        routers[instance] = router
        env._start(f"router-{instance}", router.run, lambda: True)
    ports = {i: r.metrics.server.port for i, r in routers.items()}

    def lag_partitions(instance: str) -> set[str]:
        samples = _scrape(ports[instance])
        return {
            dict(labels)["partition"]
            for (name, labels), _ in samples.items()
            if name == "cdcrouter_route_lag" and ("topic", env.raw) in labels
        }

    try:
        env.start_capture()
        env.insert_cars(2)  # maybe all in one partition: an empty one is reported as lag 0
        _wait(
            "each router reports its own partition",
            lambda: (
                len(routers["a"].assigned) == len(routers["b"].assigned) == 1
                and lag_partitions("a") == {str(p) for _, p in routers["a"].assigned}
                and lag_partitions("b") == {str(p) for _, p in routers["b"].assigned}
            ),
            timeout=90,
        )
        assert lag_partitions("a") | lag_partitions("b") == {"0", "1"}

        env.halt("router-b")
        _wait("router a owns both", lambda: len(routers["a"].assigned) == 2, timeout=90)
        env.insert_cars(2)
        _wait("router a reports both", lambda: lag_partitions("a") == {"0", "1"})
        assert lag_partitions("b") == set()  # revoked when it left: no stale gauge
    finally:
        for router in routers.values():
            router.metrics.close()
