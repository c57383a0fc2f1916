"""`cdcrouter demo`: the whole pipeline on the local real stack, with a readable summary.

Steps: stack up (PostgreSQL, Kafka, registry) → sample tables → topics → embedded capture and
routing engines and the example consumers, each in a thread → a realistic stream of changes →
wait until every routed event reached its consumer → summary → clean stop.

Re-runs are safe: capture and routing resume from their committed positions (so old events are
neither re-routed nor counted), and every id the workload writes carries the run id.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from cdcrouter.config import Connections
from cdcrouter.errors import CdcrouterError

log = logging.getLogger("cdcrouter.demo")

DEMO_SCHEMA = "cdcrouter_demo"
DEMO_SLOT = "cdcrouter_demo"
DEMO_SERVICES = ("postgres", "kafka", "registry")
DEMO_ROUTER_GROUP = "cdcrouter-demo-router"


def default_filters_path() -> Path:
    """The demo's routing rules, shipped with the package."""
    return Path(str(files("cdcrouter.demo").joinpath("filters.yaml")))


@dataclass
class DemoOptions:
    changes: int = 3_000
    rate: float = 1_000.0  # changes per second written to PostgreSQL
    filters: Path | None = None
    state_dir: Path | None = None
    keep: bool = False
    timeout_s: float = 180.0
    seed: int = 7
    status: bool = True  # end with `cdcrouter status`'s view of the still-running pipeline
    # fused mode (capture routes in its own transactions, docs/routing.md "Fused mode"): one Kafka
    # transaction from COMMIT to a readable filtered record; False runs the separate router
    fused: bool = True


@dataclass
class DemoResult:
    run_id: str
    changes_written: Counter[str]
    transactions: int
    captured: int
    routed_in: int
    routed_out: dict[str, int]  # topic -> events routed by this run
    consumed: dict[str, int]  # topic -> events consumed by this run's probe
    latencies_ms: list[float] = field(default_factory=list)
    routed_ms: list[float] = field(default_factory=list)  # commit -> routed, per event as above
    views: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seconds: float = 0.0
    complete: bool = False
    status: dict[str, Any] | None = None  # `cdcrouter status`'s document, taken before the stop
    fused: bool = False  # routed by capture in its own transactions (no separate router)

    def percentile(self, q: float, values: list[float] | None = None) -> float | None:
        """The ``q`` quantile of ``values`` (default: the end-to-end latencies)."""
        from cdcrouter.bench.stats import percentile

        return percentile(self.latencies_ms if values is None else values, q * 100)

    def split(self, q: float) -> tuple[float, float] | None:
        """The ``q`` quantiles of commit -> routed and of routed -> readable."""
        if not self.routed_ms or len(self.routed_ms) != len(self.latencies_ms):
            return None
        after = [t - r for t, r in zip(self.latencies_ms, self.routed_ms, strict=True)]
        capture, route = self.percentile(q, self.routed_ms), self.percentile(q, after)
        assert capture is not None and route is not None
        return capture, route


class _Thread(threading.Thread):
    """A daemon thread that keeps the exception of its target for the main thread to re-raise."""

    def __init__(self, name: str, target: Callable[[], Any]) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:  # re-raised in the main thread by check()
            self.error = exc

    def check(self) -> None:
        if self.error is None:
            return
        if isinstance(self.error, CdcrouterError):
            raise self.error
        # a library's own exception (Kafka, PostgreSQL): a clear message, not a traceback
        raise CdcrouterError(
            f"the demo's {self.name} thread failed: {type(self.error).__name__}: {self.error}",
            hint="cdcrouter stack status; rerun with -v for the engines' log",
        ) from self.error


def _pipeline(raw_topic: str) -> Any:
    from cdcrouter.capture import pipeline_from_dict
    from cdcrouter.capture.domain import SAMPLE_OUTBOX, SAMPLE_TABLES

    return pipeline_from_dict(
        {
            "schema": DEMO_SCHEMA,
            "raw_topic": {"name": raw_topic, "partitions": 3, "replication_factor": 1},
            "replication": {"slot": DEMO_SLOT, "publication": "cdcrouter_demo", "snapshot": "never"},
            "tables": SAMPLE_TABLES,
            "outbox": SAMPLE_OUTBOX,
        },
        source="<demo pipeline>",
    )


def _ensure_topics(conns: Connections, filters: Path, raw_topic: str) -> None:
    from cdcrouter.topics import admin_client, apply_topics, plan_topics, topics_for

    admin = admin_client(conns.kafka.to_librdkafka())
    plan = plan_topics(admin, topics_for(filters, raw_topic=raw_topic))
    apply_topics(admin, plan)


def _ensure_schemas(conns: Connections, filters: Path, raw_topic: str) -> None:
    from cdcrouter.filters import load_filters
    from cdcrouter.schemas.registry import RegistryClient, apply_schemas, desired_subjects, plan_schemas

    topics = sorted({f.output_topic for f in load_filters(filters).filters})
    client = RegistryClient(conns.registry.to_client_conf())
    apply_schemas(client, plan_schemas(client, desired_subjects(raw_topic, topics)))


def run_demo(
    opts: DemoOptions,
    conns: Connections,
    on_step: Callable[[str], None] = lambda s: None,
    on_progress: Callable[[int], None] = lambda n: None,
) -> DemoResult:
    """Run the pipeline on ``conns`` (stack already up) and return what happened."""
    from cdcrouter.capture import CaptureEngine, apply_domain
    from cdcrouter.consumer.examples import start_examples
    from cdcrouter.demo.probe import LatencyProbe
    from cdcrouter.demo.workload import Workload
    from cdcrouter.filters import load_filters
    from cdcrouter.route.engine import DEFAULT_RAW_TOPIC, Router, RouterOptions

    started = time.monotonic()
    consumers = None
    run_id = uuid.uuid4().hex[:8]
    filters = opts.filters or default_filters_path()
    filterset = load_filters(filters)  # fail fast with the file's own diagnostics
    topics = sorted({f.output_topic for f in filterset.filters if f.enabled})
    raw_topic = DEFAULT_RAW_TOPIC

    on_step(f"sample tables in schema {DEMO_SCHEMA}")
    apply_domain(conns.postgres.conninfo(), DEMO_SCHEMA)
    on_step(f"topics ({raw_topic} + {len(topics)} filtered) and schemas")
    _ensure_topics(conns, filters, raw_topic)
    _ensure_schemas(conns, filters, raw_topic)

    stop = threading.Event()
    # Every run starts a fresh slot at the current WAL position (snapshot: never), so a run
    # never depends on a slot an earlier run left behind; the run's own events are all it counts.
    capture = CaptureEngine(
        _pipeline(raw_topic),
        conns,
        resnapshot=True,
        progress=lambda msg: log.debug("%s", msg),
        route=filters if opts.fused else None,
    )
    router = None
    if not opts.fused:
        _skip_to_end(conns, raw_topic, DEMO_ROUTER_GROUP)
        router = Router(filters, conns, RouterOptions(raw_topic=raw_topic, group_id=DEMO_ROUTER_GROUP))
    counts = _Counts(capture, router)
    probe = LatencyProbe(conns, topics, run_id)
    threads = [_Thread("capture", lambda: capture.run(stop)), _Thread("probe", lambda: probe.run(stop))]
    if router is not None:
        threads.append(_Thread("router", lambda: router.run(stop)))
    how = "capture routing in its own transactions (fused)" if opts.fused else "capture, routing"
    on_step(f"{how} and the loan, service and car consumers")
    for t in threads:
        t.start()
    consumers = start_examples(conns, schema=DEMO_SCHEMA, batch_timeout=0.2)
    try:
        # Everything joined before the first change: on a stack that has just started, the first
        # group join creates __consumer_offsets (50 partitions; 2.2 s measured on a fresh broker),
        # and changes written meanwhile waited on a broker busy with it (the cold demo's tail).
        _wait(
            lambda: (
                capture.ready.is_set()
                and probe.ready.is_set()
                and counts.ready()
                and all(app.assignment for app in consumers.apps.values())
            ),
            threads,
            60,
            "capture, the router, the probe and the consumers to start",
            consumer_errors=consumers.errors,
        )
        base_captured = capture.stats.events
        base_routed = counts.matched()
        base_in = counts.routed_in()

        on_step(f"writing {opts.changes} changes at up to {opts.rate:.0f}/s")
        workload = Workload(conns.postgres.conninfo(), DEMO_SCHEMA, run_id, seed=opts.seed)
        wl = workload.run(opts.changes, opts.rate, progress=on_progress)

        on_step("waiting for every routed event to reach its consumer")
        expected_events = wl.total + 0  # one event per row change; outbox rows are one event each

        def caught_up() -> bool:
            if capture.stats.events - base_captured < expected_events:
                return False
            if counts.routed_in() - base_in < capture.stats.events - base_captured:
                return False
            routed = counts.per_topic(counts.matched() - base_routed)
            return all(probe.counts.get(t, 0) >= n for t, n in routed.items())

        complete = _wait(
            caught_up, threads, opts.timeout_s, "the pipeline to catch up", False, consumers.errors
        )
        routed = counts.per_topic(counts.matched() - base_routed)
        result = DemoResult(
            run_id=run_id,
            changes_written=wl.changes,
            transactions=wl.transactions,
            captured=capture.stats.events - base_captured,
            routed_in=counts.routed_in() - base_in,
            routed_out={t: routed.get(t, 0) for t in topics},
            consumed={t: probe.counts.get(t, 0) for t in topics},
            latencies_ms=list(probe.latencies_ms),
            routed_ms=list(probe.routed_ms),
            complete=complete,
            fused=opts.fused,
        )
        if opts.status:
            on_step("status of the running pipeline (cdcrouter status)")
            result.status = _status(conns, filters, raw_topic, DEMO_ROUTER_GROUP)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        if consumers is not None:
            consumers.stop()
        if not opts.keep:
            _drop_slot(conns, DEMO_SLOT)
    result.views = consumers.views()
    result.seconds = time.monotonic() - started
    return result


def _status(conns: Connections, filters: Path, raw_topic: str, group: str) -> dict[str, Any] | None:
    """What ``cdcrouter status`` shows for the demo's pipeline while it still runs; None (and a
    warning) when it cannot be read: the demo's own result stands either way."""
    from cdcrouter.observe import StatusOptions, collect_status, resolve_targets

    try:
        targets = resolve_targets(filters, _pipeline(raw_topic), raw_topic, group)
        return collect_status(targets, conns, StatusOptions(interval_s=1.0))
    except CdcrouterError as exc:
        log.warning("could not read the pipeline's status: %s", exc.message)
        return None


def _drop_slot(conns: Connections, slot: str) -> None:
    """An idle replication slot pins WAL forever: the demo leaves none behind (unless --keep).

    The next run creates a fresh slot; capture skips anything at or before the position it
    committed to Kafka, so nothing is doubled.
    """
    import psycopg

    try:
        with psycopg.connect(conns.postgres.conninfo(), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = %s AND NOT active",
                (slot,),
            )
    except psycopg.Error as exc:
        log.warning("could not drop the demo's replication slot %s: %s", slot, exc)


def _skip_to_end(conns: Connections, raw_topic: str, group: str) -> None:
    """Commit the raw topic's end for the demo router's group before a two-hop run.

    Each run captures from a fresh slot, so nothing already in the raw topic is this run's. Runs in
    fused mode route in capture's transactions and leave this group's offsets behind: without this,
    a two-hop run after them routed their raw records a second time (duplicates in the filtered
    topics). The same holds outside the demo: see docs/routing.md, "Switching modes"."""
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition

    from cdcrouter.topics import admin_client

    admin = admin_client(conns.kafka.to_librdkafka())
    try:
        parts = admin.list_topics(raw_topic, timeout=10).topics[raw_topic].partitions
        ends = _ends(conns, raw_topic, sorted(parts))
        offsets = [TopicPartition(raw_topic, p, end) for p, end in ends.items()]
        for fut in admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, offsets)]
        ).values():
            fut.result(timeout=30)
    except (KafkaException, KeyError) as exc:
        log.warning("could not move the demo router's group %s to the end of %s: %s", group, raw_topic, exc)


def _ends(conns: Connections, topic: str, partitions: list[int]) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({**conns.kafka.to_librdkafka(), "group.id": "cdcrouter-demo-ends"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    finally:
        c.close()


class _Counts:
    """What was routed (committed), from the router or, in fused mode, from capture's routes."""

    def __init__(self, capture: Any, router: Any) -> None:
        self.capture, self.router = capture, router

    def ready(self) -> bool:
        """The router has its partitions (a record written before would wait for the group join)."""
        return self.router is None or bool(self.router.assigned)

    def matched(self) -> Counter[str]:
        if self.router is not None:
            return Counter(self.router.metrics.matched)
        routes = self.capture.routes
        return Counter(routes.matched) if routes is not None else Counter()

    def routed_in(self) -> int:
        """Raw records routed and committed: the router's consumed count, or in fused mode the events
        of capture's committed position (its routing counts are committed with it; the produced
        count ran ahead of them, and a run that compared with it stopped before its last commit)."""
        if self.router is not None:
            return self.router.metrics.consumed
        return self.capture.stats.last.events_total

    def per_topic(self, matched: Counter[str]) -> dict[str, int]:
        """Filter-id counts folded into output-topic counts."""
        owner = self.router if self.router is not None else self.capture.routes
        table = owner._table if owner is not None else None
        out: Counter[str] = Counter()
        for fid, n in matched.items():
            topic = table.routes[fid].topic if table is not None and fid in table.routes else fid
            out[topic] += n
        return dict(out)


def _wait(
    cond: Callable[[], bool],
    threads: list[_Thread],
    timeout_s: float,
    what: str,
    fail: bool = True,
    consumer_errors: dict[str, BaseException] | None = None,
) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if consumer_errors:
            raise next(iter(consumer_errors.values()))
        for t in threads:
            t.check()
            if not t.is_alive() and t.error is None and t.name in ("capture", "router"):
                raise CdcrouterError(f"the {t.name} engine stopped unexpectedly", hint="see the log above")
        if cond():
            return True
        time.sleep(0.1)
    if fail:
        raise CdcrouterError(
            f"timed out after {timeout_s:.0f}s waiting for {what}", hint="cdcrouter stack status"
        )
    return False
