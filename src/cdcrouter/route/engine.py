"""The embedded routing engine: raw topic -> compiled filters -> filtered topics, exactly once.

One instance = one read_committed consumer in the routing group + two transaction lanes, each a
transactional producer with a stable ``transactional.id`` (``cdcrouter-router.<group>.<instance>``
and the same with ``.lane1``). Every transaction holds the filtered records, the dead-letter records
and the consumer offsets of the raw records they came from (``send_offsets_to_transaction`` with the
consumer's group metadata, KIP-447): either all of it becomes visible or none of it does, and a
zombie from an older group generation is fenced by the broker.

The lanes take turns (see :mod:`cdcrouter.route.lanes`): one commits on the committer thread while
the next records are routed into the other. A transaction is handed to the committer when the
consumer has caught up, when it is ``max_txn_ms`` old, or when it holds ``max_txn_events`` records,
and only once the commit before it has ended, so commits stay in order and a transaction grows
while the previous one commits: small transactions when traffic is light, big ones under load.
On a rebalance everything routed is committed before partitions are given away; when a commit
fails, every open transaction is aborted and the consumer rewinds to the committed offsets, so
nothing is lost or doubled. Filters change only between transactions.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from cdcrouter.errors import CdcrouterError, RouteError
from cdcrouter.naming import DEFAULT_RAW_TOPIC
from cdcrouter.naming import router_dlq_topic as dlq_topic_for
from cdcrouter.route.codec import DecodeError, FilteredSchemas, RawDecoder
from cdcrouter.route.filterset import CompiledFilters, compile_filters_file, file_stamp
from cdcrouter.route.instance import InstanceLock, default_instance_id
from cdcrouter.route.lanes import Lane, StuckCall, TxnWork, is_fatal, retrying
from cdcrouter.route.limits import (
    AUTH_ERRORS,
    BATCH_OVERHEAD,
    RECORD_ERRORS,
    UNKNOWN_TOPIC_ERRORS,
    producer_sizing,
    record_size,
    topic_limits,
)
from cdcrouter.route.metrics import RouterMetrics, e2e_bucket, e2e_counts
from cdcrouter.route.wire import MetadataEncoder, header
from cdcrouter.schemas import filtered_schema_text
from cdcrouter.schemas.registry import RegistryClient, subject_for

__all__ = ["DEFAULT_GROUP", "DEFAULT_RAW_TOPIC", "Router", "RouterOptions", "dlq_topic_for"]

log = logging.getLogger("cdcrouter.route")

DEFAULT_GROUP = "cdcrouter-router"
ERROR_HEADER = "cdcrouter.error"
FILTERS_HEADER = "cdcrouter.filters"  # the filters a record could not be written for
OMITTED_HEADER = "cdcrouter.value.omitted"  # why a dead letter carries no value
# Failures in a row, none of them followed by a commit or explained by a record it could dead-letter:
# the router stops instead of aborting and redoing the same work for ever.
MAX_FAILURES_IN_ROW = 10


@dataclass
class RouterOptions:
    raw_topic: str = DEFAULT_RAW_TOPIC
    group_id: str = DEFAULT_GROUP
    # stable and unique per instance: a restart with the same id fences its own zombie at once. The
    # host name is both for a Kubernetes StatefulSet pod (router-0, router-1, ...); two routers on
    # one host with the same id are refused (see instance_lock)
    instance_id: str = field(default_factory=default_instance_id)
    dlq_topic: str | None = None  # default: <raw>.router.dlq
    max_txn_ms: int = 100
    max_txn_events: int = 50_000
    batch_size: int = 2_000
    reload: bool = True
    reload_check_ms: int = 500
    log_interval_s: float = 10.0
    metrics_port: int | None = None
    metrics_address: str = "127.0.0.1"  # 0.0.0.0 (or the pod's address) to be scraped from outside
    topic_wait_s: float = 20.0  # how long a starting router waits for its topics' metadata
    transaction_timeout_ms: int = 60_000  # > a broker restart; a restart with the same id aborts at once
    retry_s: float = 120.0  # how long retriable transaction errors (broker restart) are retried
    # Hard limit per transactional call. librdkafka does not always honour its own timeout (a
    # send_offsets_to_transaction waiting for a stale group coordinator after a broker restart never
    # returns, librdkafka #5456/#5511); past this limit the producer is abandoned and replaced.
    txn_call_timeout_s: float = 20.0
    refence_backoff_s: float = 1.0  # wait before taking a fenced transactional.id back
    auto_offset_reset: str = "earliest"
    consumer_conf: dict[str, Any] = field(default_factory=dict)
    producer_conf: dict[str, Any] = field(default_factory=dict)

    lanes: int = 2  # transactional producers taking turns: one commits while the next batch is produced

    @property
    def transactional_id(self) -> str:
        return f"cdcrouter-router.{self.group_id}.{self.instance_id}"

    @property
    def transactional_ids(self) -> list[str]:
        """One per lane; the first is the instance's own id, so it fences a one-lane predecessor."""
        return [self.transactional_id] + [f"{self.transactional_id}.lane{i}" for i in range(1, self.lanes)]

    @property
    def dlq(self) -> str:
        return self.dlq_topic or dlq_topic_for(self.raw_topic)


@dataclass(frozen=True)
class _Route:
    filter_id: str
    consumer_id: str
    topic: str
    header: bytes  # Confluent header with the filtered schema's id for this topic
    meta: MetadataEncoder
    max_bytes: int  # key + value this topic accepts: its max.message.bytes less a batch's overhead


class _Skipped(Exception):
    """A commit not attempted because an earlier one failed (the transaction is aborted instead)."""


@dataclass(frozen=True)
class _Table:
    filters: CompiledFilters
    routes: dict[str, _Route]

    @property
    def labels(self) -> dict[str, tuple[str, str]]:
        return {fid: (r.consumer_id, r.topic) for fid, r in self.routes.items()}


@dataclass
class RunStats:
    consumed: int
    dead_lettered: int
    matched: dict[str, int]
    transactions: int
    seconds: float
    active_seconds: float  # first record consumed -> last commit: the routing time without start-up


class Router:
    """Route the raw topic through a filters file; ``run()`` until stopped.

    Example (in-process)::

        router = Router("filters.yaml", load_connections(), RouterOptions(group_id="demo"))
        router.run(stop_event)
    """

    def __init__(
        self, filters_path: str | Path, connections: Any, options: RouterOptions | None = None
    ) -> None:
        self.path = Path(filters_path)
        self.conns = connections
        self.opts = options or RouterOptions()
        self.metrics = RouterMetrics()
        self._registry = RegistryClient(connections.registry.to_client_conf())
        self._decoder = RawDecoder(self._registry.schema_by_id)
        self._evolved = FilteredSchemas(self._registry)
        self._schema_ids: dict[str, int] = {}
        self._consumer: Consumer | None = None
        self._lanes: list[Lane] = []
        self._fill_at = 0  # index of the lane the next records go into
        self._committer: ThreadPoolExecutor | None = None
        # commits handed to the committer, oldest first; it runs them in this order
        self._inflight: deque[tuple[Lane, Future[float]]] = deque()
        self._poisoned = False  # a commit failed: the committer commits nothing after it
        self._group_md: Any = None
        self._table: _Table | None = None
        self._transactions = 0
        self.assigned: set[tuple[str, int]] = set()  # partitions this instance owns now
        # where routing of a partition without committed offsets began (auto.offset.reset, resolved
        # at assignment): an abort before its first commit goes back there, not to the beginning
        self._origins: dict[tuple[str, int], int] = {}
        self._first_at: float | None = None
        self._recoveries: list[float] = []
        self._last_commit_at = 0.0
        self._admin: AdminClient | None = None
        self._limits: dict[str, int] = {}  # topic -> max.message.bytes
        # Records the broker refused for good: (topic, partition, offset) -> filter id -> why. The
        # redo after the abort dead-letters them for those filters instead of producing them again.
        self._poison: dict[tuple[str, int, int], dict[str, str]] = {}
        self._careful = False  # redoing after a failure: every record's delivery is watched
        # refused by the broker during a watched redo: (source, filter id, topic, why, too large?)
        self._refusals: list[tuple[tuple[str, int, int], str, str, str, bool]] = []
        self._resize = False  # an output topic's limit shrank below the producers' batch size
        self._failures_in_row = 0
        self._refused_topics: dict[str, KafkaError] = {}  # unknown or not authorized, seen on delivery
        self._dlq_error: str | None = None  # the DLQ refused a dead letter
        self._instance_lock: InstanceLock | None = None
        self._checked_topics = False  # run() found every topic: one missing later was deleted

    @property
    def _fill(self) -> Lane:
        return self._lanes[self._fill_at]

    # ------------------------------------------------------------------ set-up

    def _prepare_table(self, filters: CompiledFilters, wait_s: float = 0.0) -> _Table:
        """Resolve every output topic's schema id and check the topics exist (no auto-creation),
        waiting up to ``wait_s`` for topics just created to show up with all their partitions."""
        missing = self._await_topics([*filters.topics, self.opts.dlq], wait_s)
        if missing:
            raise RouteError(
                f"topic(s) {', '.join(missing)} do not exist",
                hint="create them first: cdcrouter topics apply (topics are never auto-created)",
            )
        self._limits.update(topic_limits(self._admin_client(), [*filters.topics, self.opts.dlq]))
        routes = {}
        for fid, spec in filters.routes.items():
            schema_id = self._schema_ids.get(spec.topic)
            if schema_id is None:
                schema_id = self._registry.lookup(subject_for(spec.topic), filtered_schema_text())
                if schema_id is None:
                    raise RouteError(
                        f"the filtered schema is not registered under {subject_for(spec.topic)}",
                        hint="register it first: cdcrouter schemas apply",
                    )
                self._schema_ids[spec.topic] = schema_id
            routes[fid] = _Route(
                fid,
                spec.consumer_id,
                spec.topic,
                header(schema_id),
                MetadataEncoder(fid, spec.consumer_id),
                self._limits[spec.topic] - BATCH_OVERHEAD,
            )
        return _Table(filters, routes)

    def _serve_metrics(self) -> None:
        port, address = self.opts.metrics_port, self.opts.metrics_address
        assert port is not None
        try:
            self.metrics.serve(port, address)
        except OSError as exc:
            raise RouteError(
                f"cannot serve metrics on {address}:{port}: {exc.strerror or exc}",
                hint="pick a free port with --metrics-port, or check --metrics-address",
            ) from exc
        log.info("metrics on http://%s:%d/metrics", address, port)

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(self.conns.kafka.to_librdkafka())
        return self._admin

    def _missing_topics(self, topics: list[str]) -> list[str]:
        """Topics the cluster's metadata does not show, or shows without a leader for a partition."""
        md = self._admin_client().list_topics(timeout=10).topics
        return [
            t
            for t in topics
            if t not in md
            or md[t].error is not None
            or not md[t].partitions
            or any(p.leader < 0 or p.error is not None for p in md[t].partitions.values())
        ]

    def _await_topics(self, topics: list[str], wait_s: float) -> list[str]:
        """Wait up to ``wait_s`` for the topics' metadata (right after ``topics apply`` it may not
        have reached every broker: the first transaction then aborted on "Unknown topic or
        partition"); the topics still missing after that."""
        deadline = time.monotonic() + wait_s
        missing = self._missing_topics(topics)
        if missing and wait_s > 0:
            log.info("waiting up to %.0f s for topic(s) %s", wait_s, ", ".join(missing))
        while missing and time.monotonic() < deadline:
            time.sleep(0.25)
            missing = self._missing_topics(missing)
        return missing

    def _clients(self) -> None:
        kafka = self.conns.kafka.to_librdkafka()
        consumer_conf = {
            **kafka,
            "group.id": self.opts.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": self.opts.auto_offset_reset,
            "fetch.wait.max.ms": 100,
            "queued.min.messages": 20_000,
            # Once 20,000 records are queued librdkafka pauses fetching for this long (default 1 s):
            # the router drains that in ~0.2 s and then sat idle; measured 31k -> 61k events/s.
            "fetch.queue.backoff.ms": 5,
            "session.timeout.ms": 15_000,
            **self.opts.consumer_conf,
        }
        producer_conf = {
            **self.conns.kafka.producer_conf(),
            "transaction.timeout.ms": self.opts.transaction_timeout_ms,
            "linger.ms": 5,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            # The coordinator answers CONCURRENT_TRANSACTIONS while the previous commit's markers are
            # written; the default 100 ms retry backoff then costs ~60 ms per transaction (measured).
            "retry.backoff.ms": 5,
            # every record a topic accepts gets through; none that no topic accepts is retried
            **self._sizing(),
            **self.opts.producer_conf,
        }
        self._lanes = [
            Lane(tid, producer_conf, self.opts.retry_s, self.opts.txn_call_timeout_s)
            for tid in self.opts.transactional_ids
        ]
        for lane in self._lanes:
            self._start_lane(lane)
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="cdcrouter-commit")
        self._consumer = Consumer(consumer_conf)

    def _sizing(self) -> dict[str, Any]:
        raw = self.opts.raw_topic
        return producer_sizing({t: n for t, n in self._limits.items() if t != raw}, self._limits.get(raw, 0))

    def _start_lane(self, lane: Lane) -> None:
        try:
            lane.start()
        except StuckCall as exc:
            raise RouteError(
                f"cannot start transactions as {lane.transactional_id}: {exc}",
                hint="check that Kafka is up (cdcrouter stack status) and its transaction log is available",
            ) from exc
        except KafkaException as exc:
            raise RouteError(
                f"cannot start transactions as {lane.transactional_id}: {exc.args[0].str()}",
                hint="check that Kafka is up (cdcrouter stack status) and its transaction log is available",
            ) from exc

    def _replace(self, lanes: list[Lane], why: str) -> None:
        """A fatal producer error (fenced, e.g. the coordinator expired the transaction during a
        broker outage) or a stuck call: new producers with the same transactional.ids. One failure
        counts once, however many lanes it took along (aborting the other lane's transaction after
        a fence was seen to fail with INVALID_TXN_STATE, fatal in librdkafka). Repeated failures
        mean another live instance has our id: stop."""
        now = time.monotonic()
        self._recoveries = [t for t in self._recoveries if now - t < 300] + [now]
        if len(self._recoveries) > 3:
            raise RouteError(
                f"transactions of {lanes[0].transactional_id} keep failing: {why}",
                hint="another running instance probably uses the same --instance-id (each needs its own)",
            )
        # Whoever fenced us may still be inside its own init_transactions, retrying while the
        # coordinator aborts our transaction; taking the id back at once made the two fence each
        # other in turn (3 recoveries for one fence, seen in the tests).
        time.sleep(self.opts.refence_backoff_s)
        for lane in lanes:
            log.warning("producer %s failed (%s); starting a new one", lane.transactional_id, why)
            lane.in_txn = False
            try:
                lane.replace()
            except StuckCall as exc:
                lane.abandon()
                raise RouteError(f"cannot restart transactions as {lane.transactional_id}: {exc}") from exc

    # ------------------------------------------------------------------ run

    def run(
        self,
        stop: threading.Event | None = None,
        max_events: int | None = None,
        idle_timeout_s: float | None = None,
    ) -> RunStats:
        """Route until ``stop`` is set, ``max_events`` raw records are committed, or nothing arrived
        for ``idle_timeout_s`` seconds. The open transactions are committed before returning."""
        stop = stop or threading.Event()
        started = time.monotonic()
        filters = compile_filters_file(self.path)  # bad filters fail before touching Kafka
        self._instance_lock = InstanceLock.acquire(self.opts.group_id, self.opts.instance_id)
        try:
            if self._await_topics([self.opts.raw_topic], self.opts.topic_wait_s):
                raise RouteError(
                    f"raw topic {self.opts.raw_topic} does not exist",
                    hint="check --raw-topic / pipeline.yaml, or create it: cdcrouter topics apply",
                )
            self._table = self._prepare_table(filters, self.opts.topic_wait_s)
            self._checked_topics = True
            # the raw topic's limit too: a record it accepted fits the producer, whatever a reload adds
            self._limits.update(topic_limits(self._admin_client(), [self.opts.raw_topic]))
            self._clients()
            assert self._consumer is not None
            log.info(
                "routing %s with %d filter(s) from %s as %s (group %s, %d lane(s))",
                self.opts.raw_topic,
                len(self._table.routes),
                self.path,
                self.opts.transactional_id,
                self.opts.group_id,
                len(self._lanes),
            )
            if self.opts.metrics_port:
                self._serve_metrics()
            # Everything built so far lives as long as the router: move it out of the collector's
            # view so full collections (measured 17-38 ms pauses in capture) scan only new objects.
            gc.freeze()
            self._consumer.subscribe(
                [self.opts.raw_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            self._loop(stop, max_events, idle_timeout_s)
            self._drain()
        except KafkaException as exc:
            raise RouteError(
                f"Kafka failed while routing {self.opts.raw_topic}: {exc.args[0].str()}",
                hint="check the broker (cdcrouter stack status); a restart resumes from committed offsets",
            ) from exc
        finally:
            gc.unfreeze()  # a process that goes on (the demo, tests) collects normally again
            self._close()
            self.metrics.health.set(False, "stopped")  # the endpoint stays up: a last scrape sees the end
        log.info("stopped: %s", self.metrics.summary())
        return RunStats(
            self.metrics.consumed,
            self.metrics.dead_lettered,
            dict(self.metrics.matched),
            self._transactions,
            time.monotonic() - started,
            (self._last_commit_at - self._first_at) if self._first_at is not None else 0.0,
        )

    def _loop(self, stop: threading.Event, max_events: int | None, idle_timeout_s: float | None) -> None:
        """Consume, route into the filling lane's transaction, hand it to the committer when it is
        due and the committer is free; the next records go to the other lane meanwhile."""
        consumer = self._consumer
        assert consumer is not None
        last_data = time.monotonic()
        next_reload = time.monotonic() + self.opts.reload_check_ms / 1000
        next_log = time.monotonic() + self.opts.log_interval_s
        next_lag = 0.0
        batch = self.opts.batch_size
        beat = self.metrics.health.beat  # /readyz: a loop that stops turning is stalled
        while not stop.is_set():
            beat()
            if not self._settle(wait=False):
                continue
            fill = self._fill
            if fill.in_txn and not self._inflight:
                msgs = consumer.consume(batch, 0)
            else:
                # Nothing open, or commits under way that free the next lane: wait for a record, but
                # briefly while a commit may end (consume() would wait out its whole timeout
                # whenever fewer than `batch` records come).
                first = consumer.poll(0.002 if self._inflight else 0.05)
                msgs = [first] if first is not None else []
                if first is not None:
                    msgs += consumer.consume(batch - 1, 0)
            if msgs:
                last_data = time.monotonic()
                if self._first_at is None:
                    self._first_at = last_data
                try:
                    self._process(msgs, fill)
                except KafkaException as exc:  # the batch is redone from the committed offsets
                    # Not only txn_requires_abort(): after an abort that purged in-flight records,
                    # the lane's next transaction fails on the sequence gap ("requires epoch bump")
                    # and produce() reports it as _STATE; aborting is what clears it.
                    err = exc.args[0]
                    self._fail(err.str(), broken=fill if is_fatal(err) else None, err=err)
                    continue
            if fill.in_txn and (
                len(msgs) < batch
                or (time.monotonic() - fill.started) * 1000 >= self.opts.max_txn_ms
                or fill.work.consumed >= self.opts.max_txn_events
            ):
                full = fill.work.consumed >= self.opts.max_txn_events
                if full and self._next_lane_busy() and not self._settle(wait=True):
                    continue  # full: waited for the next lane's commit, and it failed
                if not self._next_lane_busy():
                    self._hand_off(fill)
            now = time.monotonic()
            if not self._fill.in_txn:
                if not self._inflight:
                    if max_events is not None and self.metrics.consumed >= max_events:
                        break
                    if idle_timeout_s is not None and now - last_data >= idle_timeout_s:
                        break
                # between transactions: the next records are routed by the new filters, each once
                if self.opts.reload and now >= next_reload:
                    next_reload = now + self.opts.reload_check_ms / 1000
                    self._maybe_reload()
            if now >= next_lag:
                next_lag = now + 1.0
                self._report_lag(consumer)
            if now >= next_log:
                next_log = now + self.opts.log_interval_s
                log.info(
                    "routed: transactions=%d %s %s",
                    self._transactions,
                    self.metrics.commit_timing(),
                    self.metrics.summary(),
                )

    def _report_lag(self, consumer: Consumer) -> None:
        """Lag per owned partition for the metrics: its high watermark (cached from fetches, no
        request) minus this router's position."""
        try:
            positions = consumer.position([TopicPartition(t, p) for t, p in self.assigned])
        except KafkaException:
            return
        for tp in positions:
            try:
                low, high = consumer.get_watermark_offsets(tp, cached=True) or (-1, -1)
            except KafkaException:
                continue  # no fetch response yet for this partition
            if high < 0:
                continue
            if tp.offset >= 0:
                self.metrics.lag(tp.topic, tp.partition, max(0, high - tp.offset))
            elif low == high:  # nothing consumed yet because the partition is empty: nothing to do
                self.metrics.lag(tp.topic, tp.partition, 0)

    def _close(self) -> None:
        try:
            if self._inflight or any(lane.in_txn for lane in self._lanes):
                self._fail("shutting down", rewind=False)
        except RouteError as exc:  # uncommitted work is redone by the next run; nothing is lost
            log.warning("%s", exc.message)
        if self._consumer is not None:
            try:
                self._consumer.close()  # its revoke commits what is routed: may fail like any commit
            except (KafkaException, RouteError) as exc:
                log.warning(
                    "closing the consumer: %s", exc.args[0].str() if isinstance(exc, KafkaException) else exc
                )
            self._consumer = None
        for lane in self._lanes:
            if lane.producer is not None and not lane.stuck:
                try:
                    lane.deliver(10)
                except KafkaException as exc:  # fenced or fatal: nothing of it is committed anyway
                    log.warning("closing %s: %s", lane.transactional_id, exc.args[0].str())
            lane.producer = None
        if self._committer is not None:
            self._committer.shutdown(wait=False)
            self._committer = None
        self._registry.close()
        if self._instance_lock is not None:
            self._instance_lock.release()
            self._instance_lock = None

    # ------------------------------------------------------------------ per record

    def _process(self, msgs: list[Any], lane: Lane) -> None:
        """Route one consumed batch into the lane's open transaction (begun here if none is open).

        The per-record loop is the engine's hot path: everything that does not change per record
        (bound methods, each route's framing and metadata bytes for this batch's ``filteredAt``)
        is looked up once per batch.
        """
        producer = lane.producer
        assert producer is not None and self._table is not None
        work = lane.work
        routes = self._table.routes
        match = self._table.filters.match
        decode = self._decoder.decode
        evolved = self._evolved.header
        offsets = work.offsets
        matched = work.matched
        e2e = work.e2e
        produce = producer.produce
        now_ms = time.time_ns() // 1_000_000  # filteredAt: one clock read per batch
        # per writer schema id: filter id -> (topic, header, metadata, largest key + value the topic
        # accepts); an evolved raw writer schema's records go out under the filtered schema derived
        # from it, so their headers differ
        framings: dict[int, dict[str, tuple[str, bytes, bytes, int]]] = {}
        framing: dict[str, tuple[str, bytes, bytes, int]] = {}
        last_writer = None
        poison = self._poison  # records the broker refused for good: dead-lettered, not redone
        careful = self._careful  # after a failure: each record's delivery is watched
        errors = 0
        for msg in msgs:
            err = msg.error()
            if err is not None:
                errors += 1
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise RouteError(f"Kafka consumer failed: {err.str()}")
                log.warning("consumer: %s", err.str())
                continue
            if not lane.in_txn:
                lane.begin()
            try:
                event, body, writer = decode(msg.value())
                ids = match(event)
                if writer is not last_writer:
                    last_writer = writer
                    framing = framings.setdefault(writer.schema_id, {})
                if not writer.passthrough:  # registered (or refused: DecodeError) before any produce
                    for fid in ids:
                        if fid not in framing:
                            route = routes[fid]
                            head = evolved(writer, route.topic)
                            framing[fid] = (route.topic, head, route.meta.encode(now_ms), route.max_bytes)
            except DecodeError as exc:
                self._dead_letter(msg, str(exc), lane)
                continue
            except CdcrouterError:
                raise
            except Exception as exc:  # an evaluator failure must not stop the stream or drop the record
                self._dead_letter(msg, f"filter evaluation failed: {exc!r}", lane)
                continue
            if not ids:
                continue
            age = now_ms - event["eventHeader"]["createdDate"]  # e2e latency: source commit -> routed
            if age < 0:
                age = 0  # the database's clock is ahead of this host's
            bucket = e2e_bucket(age)
            entities = event["eventBody"]["entities"]
            key = entities[0]["entityId"].encode() if entities else msg.key()
            refused = poison.get((msg.topic(), msg.partition(), msg.offset())) if poison else None
            rejected: dict[str, str] | None = None
            for fid in ids:
                f = framing.get(fid)
                if f is None:
                    route = routes[fid]
                    f = framing[fid] = (route.topic, route.header, route.meta.encode(now_ms), route.max_bytes)
                topic = f[0]
                out = b"".join((f[1], body, f[2]))
                size = len(out) + (len(key) if key else 0)
                if size > f[3] or (refused is not None and fid in refused):
                    rejected = rejected or {}
                    rejected[fid] = (refused or {}).get(fid) or _too_large(topic, size, f[3])
                    continue
                try:
                    if careful:
                        produce(topic, out, key, on_delivery=self._watch(msg, fid, topic))
                    else:
                        produce(topic, out, key)
                except BufferError:
                    lane.poll(0.1)
                    if careful:
                        produce(topic, out, key, on_delivery=self._watch(msg, fid, topic))
                    else:
                        produce(topic, out, key)
                except KafkaException as exc:  # refused by the client: no redo could write it either
                    if exc.args[0].code() not in RECORD_ERRORS:
                        raise
                    rejected = rejected or {}
                    rejected[fid] = f"{exc.args[0].name()}: {exc.args[0].str()} (topic {topic})"
                    continue
                matched[fid] += 1
                counts = e2e.get(fid)
                if counts is None:
                    counts = e2e[fid] = e2e_counts()
                counts[bucket] += 1
                counts[-1] += age
            if rejected:
                self._dead_letter(msg, _rejection(rejected), lane, sorted(rejected))
        work.consumed += len(msgs) - errors
        # The next offset per partition: its last record in the batch (a partition's records arrive
        # in order) wins; earlier ones are skipped without a dict write.
        for msg in reversed(msgs):
            if msg.error() is None:
                tp = (msg.topic(), msg.partition())
                if offsets.get(tp, -1) <= msg.offset():
                    offsets[tp] = msg.offset() + 1
        lane.poll(0)

    def _dead_letter(self, msg: Any, error: str, lane: Lane, filter_ids: list[str] | None = None) -> None:
        """Write the raw record to the DLQ with why, in the lane's transaction. One that the DLQ
        itself would refuse keeps the headers (error and source position) without the value."""
        assert lane.producer is not None
        ours = [
            (ERROR_HEADER, error.encode()),
            ("cdcrouter.source.topic", msg.topic().encode()),
            ("cdcrouter.source.partition", str(msg.partition()).encode()),
            ("cdcrouter.source.offset", str(msg.offset()).encode()),
        ]
        if filter_ids:
            ours.append((FILTERS_HEADER, ",".join(filter_ids).encode()))
        value, key = msg.value(), msg.key()
        headers = [*(msg.headers() or []), *ours]
        dlq_max = self._limits.get(self.opts.dlq, 0) - BATCH_OVERHEAD
        if dlq_max > 0 and record_size(key, value, headers) > dlq_max:
            size = len(value or b"")
            ours.append(
                (
                    OMITTED_HEADER,
                    f"value of {size} bytes left out: {self.opts.dlq} accepts {dlq_max + BATCH_OVERHEAD} "
                    "(max.message.bytes); read it from the source topic, partition and offset".encode(),
                )
            )
            value, headers = None, ours
            if record_size(key, value, headers) > dlq_max:
                key = None
        try:
            if self._careful:
                lane.producer.produce(self.opts.dlq, value, key, headers=headers, on_delivery=self._watch_dlq)
            else:
                lane.producer.produce(self.opts.dlq, value, key, headers=headers)
        except KafkaException as exc:
            raise RouteError(
                f"cannot dead-letter {msg.topic()}[{msg.partition()}]@{msg.offset()} to {self.opts.dlq}: "
                f"{exc.args[0].str()} (it was dead-lettered because: {error})",
                hint=f"check {self.opts.dlq} (cdcrouter topics apply) and the router's rights to write it",
            ) from exc
        lane.work.dead_lettered += 1
        log.warning(
            "dead-lettered %s[%d]@%d to %s: %s",
            msg.topic(),
            msg.partition(),
            msg.offset(),
            self.opts.dlq,
            error,
        )

    def _watch(self, msg: Any, fid: str, topic: str) -> Any:
        """A delivery callback for one output record while redoing after a failure: the broker's
        refusal of this record is remembered, so the next redo dead-letters it for this filter."""
        source = (msg.topic(), msg.partition(), msg.offset())

        def delivered(err: KafkaError | None, _out: Any) -> None:
            if err is None:
                return
            code = err.code()  # may raise SystemError: see kafka_error_of
            if code in RECORD_ERRORS:
                too_large = code in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE)
                self._refusals.append(
                    (source, fid, topic, f"{err.name()}: {err.str()} (topic {topic})", too_large)
                )
            elif code in UNKNOWN_TOPIC_ERRORS or code in AUTH_ERRORS:
                self._refused_topics[topic] = err

        return delivered

    def _watch_dlq(self, err: KafkaError | None, _out: Any) -> None:
        if err is None:
            return
        code = err.code()  # may raise SystemError: see kafka_error_of
        if code in RECORD_ERRORS or code in AUTH_ERRORS:
            self._dlq_error = err.str()

    def _judge(self, err: KafkaError | None) -> None:
        """Before aborting for ``err``: stop with a clear error when redoing cannot help, so the
        router never aborts and redoes the same work for ever."""
        code = err.code() if err is not None else None
        if self._dlq_error is not None:
            raise RouteError(
                f"{self.opts.dlq} refused a dead letter: {self._dlq_error}",
                hint=f"check {self.opts.dlq}'s configuration and the router's rights to write it",
            )
        denied = [t for t, e in self._refused_topics.items() if e.code() in AUTH_ERRORS]
        if code in AUTH_ERRORS or denied:
            raise RouteError(
                f"not authorized to write {', '.join(denied) or 'an output topic'}: "
                f"{err.str() if err is not None else self._refused_topics[denied[0]].str()}",
                hint="grant the router's principal Write on the filtered topics and the DLQ, "
                "and its transactional ids and group; it resumes from the committed offsets",
            )
        unknown = [t for t, e in self._refused_topics.items() if e.code() in UNKNOWN_TOPIC_ERRORS]
        self._refused_topics.clear()
        if code in UNKNOWN_TOPIC_ERRORS or unknown:
            self._stop_if_outputs_gone()  # else the metadata has not reached every broker yet
            log.info("topic metadata not settled yet (%s): redoing", ", ".join(unknown) or err.str())
        self._failures_in_row += 1
        if self._explained(err):
            self._failures_in_row = 0  # the redo dead-letters what was refused
        elif self._failures_in_row > MAX_FAILURES_IN_ROW:
            raise RouteError(
                f"routing keeps failing ({self._failures_in_row} aborts in a row, nothing committed "
                f"between them): {err.str() if err is not None else 'see the warnings above'}",
                hint="fix the cause and restart; the router resumes from the committed offsets",
            )

    def _stop_if_outputs_gone(self) -> None:
        """Stop, naming the topic and its filters, when an output topic was deleted while routing.

        Why stop rather than pause that one route: the raw offsets are committed per partition for
        all filters at once. Pausing one route means holding back every route's offsets (every
        filter stalls anyway) or passing records that route never got (lost to its consumer). A
        stop says so at once; the restarted router refuses to start until the topic is back or the
        filter is gone, then resumes from the committed offsets: nothing lost, nothing doubled."""
        table = self._table
        if table is None or not self._checked_topics:
            return
        gone = self._missing_topics([*table.filters.topics, self.opts.dlq])
        if gone:  # one more look: a metadata answer from a broker that is just starting up
            time.sleep(1.0)
            gone = self._missing_topics(gone)
        if not gone:
            return
        owners = {t: sorted(fid for fid, r in table.routes.items() if r.topic == t) for t in gone}
        what = "; ".join(
            f"{t} (the router's dead-letter topic)"
            if t == self.opts.dlq
            else f"{t} (filter {', '.join(owners[t])})"
            for t in gone
        )
        raise RouteError(
            f"output topic deleted while routing: {what}. Every filter is stopped with it: the raw "
            "offsets are shared, so no filter can go on without losing that one's events",
            hint="recreate it (cdcrouter topics apply), or remove or disable the filter in "
            "filters.yaml; then restart: routing resumes from the committed offsets",
        )

    def _explained(self, err: KafkaError | None) -> bool:
        """Did the broker refuse records for good? Then the redo does not write them again: a topic
        whose ``max.message.bytes`` changed gets its new limit (the size check before producing
        then dead-letters what no longer fits); any other refused record is dead-lettered for the
        filter it was refused for."""
        refusals, self._refusals = self._refusals, []
        sized = err is not None and err.code() in (
            KafkaError.MSG_SIZE_TOO_LARGE,
            KafkaError.RECORD_LIST_TOO_LARGE,
        )
        if (sized or any(r[4] for r in refusals)) and self._refresh_limits():
            refusals = [r for r in refusals if not r[4]]
            if not refusals:
                return True
        for source, fid, _topic, why, _sized in refusals:
            self._poison.setdefault(source, {})[fid] = why
        return bool(refusals)

    def _refresh_limits(self) -> bool:
        """Read the output topics' limits again; True if one changed (the routes then use it)."""
        table = self._table
        if table is None:
            return False
        outputs = [*table.filters.topics, self.opts.dlq]
        fresh = topic_limits(self._admin_client(), outputs)
        if all(self._limits.get(t) == n for t, n in fresh.items()):
            return False
        log.warning(
            "output topic limits changed: %s", {t: n for t, n in fresh.items() if self._limits.get(t) != n}
        )
        batch = producer_sizing({t: n for t, n in self._limits.items() if t in outputs})["batch.size"]
        self._limits.update(fresh)
        self._resize = min(fresh.values()) - BATCH_OVERHEAD < batch
        self._table = _Table(
            table.filters,
            {
                fid: replace(r, max_bytes=self._limits[r.topic] - BATCH_OVERHEAD)
                for fid, r in table.routes.items()
            },
        )
        return True

    # ------------------------------------------------------------------ transactions

    def _hand_off(self, lane: Lane) -> None:
        """Queue the lane's commit on the committer thread and move on to the next lane. The
        committer runs commits in the order handed off, so they complete in that order.

        Per-key order: the lanes are two producers on two connections, so the next lane's record
        for a partition could reach the broker before this lane's last ones (a batch still
        lingering, or retried) and a key's events would be read out of order. This lane's records
        are therefore delivered first, on this thread; sending the offsets and ending the
        transaction still overlap the routing. If they cannot all be delivered within a call's
        limit (broker trouble), nothing more is routed until this commit has ended either way."""
        committer = self._committer
        assert committer is not None
        try:
            undelivered = lane.deliver(self.opts.txn_call_timeout_s)
            if undelivered > 0:  # a deleted output topic holds its records until they time out
                self._stop_if_outputs_gone()
        except KafkaException as exc:  # fenced or fatal: its commit fails the same way and recovers
            log.warning("delivering %s: %s", lane.transactional_id, exc.args[0].str())
            undelivered = -1
        positions = [TopicPartition(t, p, o) for (t, p), o in lane.work.offsets.items()]
        lane.handed_off = time.monotonic()
        self._inflight.append((lane, committer.submit(self._commit_in_order, lane, positions)))
        self._fill_at = (self._fill_at + 1) % len(self._lanes)
        if undelivered:
            if undelivered > 0:
                tid = lane.transactional_id
                log.warning("%d records of %s not delivered yet: waiting for its commit", undelivered, tid)
            while self._inflight and self._settle(wait=True):
                pass
        while self._next_lane_busy(self._fill) and self._settle(wait=True):
            pass  # one lane: nothing to fill meanwhile

    def _commit_in_order(self, lane: Lane, positions: list[TopicPartition]) -> float:
        """On the committer thread. After a failed commit nothing later may commit (its offsets
        would pass records that are not committed): those wait for the router to abort them."""
        if self._poisoned:
            raise _Skipped("an earlier transaction failed")
        try:
            return lane.commit(positions, self._group_metadata)
        except BaseException:
            self._poisoned = True
            raise

    def _next_lane_busy(self, lane: Lane | None = None) -> bool:
        """Is the lane (default: the one after the filling lane) still being committed? Lanes are
        used in turn, so it is the oldest commit in flight, if any is."""
        lane = lane or self._lanes[(self._fill_at + 1) % len(self._lanes)]
        return any(busy is lane for busy, _ in self._inflight)

    def _group_metadata(self, fresh: bool = False) -> Any:
        """The consumer's group metadata, asked once per assignment (or when ``fresh``)."""
        consumer = self._consumer
        assert consumer is not None
        if fresh or self._group_md is None:
            self._group_md = consumer.consumer_group_metadata()
        return self._group_md

    def _settle(self, wait: bool) -> bool:
        """Take the outcomes of the commits that have ended, oldest first (with ``wait``, wait for
        the oldest). False when one failed: then everything uncommitted has been aborted and the
        consumer rewound."""
        waited = not wait
        while self._inflight:
            lane, future = self._inflight[0]
            if not future.done() and waited:
                return True
            waited = True
            self._inflight.popleft()
            try:
                took = future.result()
            except StuckCall as exc:
                lane.abandon()
                self._fail(str(exc), broken=lane)
                return False
            except KafkaException as exc:
                err = exc.args[0]
                if err.txn_requires_abort():
                    self._fail(err.str(), err=err)
                    return False
                if is_fatal(err):
                    self._fail(err.str(), broken=lane, err=err)
                    return False
                raise RouteError(
                    f"transaction failed for {lane.transactional_id}: {err.str()}",
                    hint="another instance may use the same --instance-id (each needs its own), "
                    "or the broker fenced this one; restart it",
                ) from exc
            self._committed(lane, took)
        return True

    def _committed(self, lane: Lane, took: float) -> None:
        assert self._table is not None
        self._transactions += 1
        self._last_commit_at = time.monotonic()
        self.metrics.commit_took(took)
        work = lane.work
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "committed %d on %s: filled %.1f ms, queued %.1f ms, commit %.1f ms (offsets %.1f)",
                work.consumed,
                lane.transactional_id,
                (lane.handed_off - lane.started) * 1000,
                (lane.commit_began - lane.handed_off) * 1000,
                took * 1000,
                lane.offsets_s * 1000,
            )
        self.metrics.commit(work.consumed, work.dead_lettered, work.matched, self._table.labels, work.e2e)
        lane.work = TxnWork()
        self._careful = False
        self._failures_in_row = 0
        if self._poison:  # dead-lettered and committed: forget them
            for source in [s for s in self._poison if work.offsets.get(s[:2], -1) > s[2]]:
                del self._poison[source]

    def _drain(self) -> bool:
        """Commit everything routed so far (before stopping or giving partitions away)."""
        if self._fill.in_txn:
            self._hand_off(self._fill)
        while self._inflight:
            if not self._settle(wait=True):
                return False
        return True

    def _fail(
        self, why: str, broken: Lane | None = None, rewind: bool = True, err: KafkaError | None = None
    ) -> None:
        """Abort everything not committed and go back to the committed offsets, so it is redone
        once. Commits still in flight end first: which of them committed decides where that is.
        The redo watches every record's delivery (see :meth:`_watch`); a failure no redo can fix
        stops the router instead (:meth:`_judge`)."""
        log.warning("aborting uncommitted transactions: %s", why)
        replace = {id(broken)} if broken is not None else set()
        while self._inflight:
            lane, future = self._inflight.popleft()
            try:
                self._committed(lane, future.result())
            except StuckCall:
                lane.abandon()
                replace.add(id(lane))
            except _Skipped:
                pass
            except KafkaException as exc:
                if is_fatal(exc.args[0]):
                    replace.add(id(lane))
        self._poisoned = False
        if rewind:
            for lane in self._lanes:  # their delivery reports say which records were refused
                if id(lane) not in replace:
                    lane.serve_reports()
            self._judge(err)
        for lane in self._lanes:
            if id(lane) not in replace and lane.in_txn:
                try:
                    lane.abort()
                except StuckCall:
                    lane.abandon()
                    replace.add(id(lane))
                except KafkaException as exc:
                    # fatal, or still failing after a call's limit: a new producer with this id
                    # aborts the transaction on the broker when it registers (init_transactions)
                    if not is_fatal(exc.args[0]):
                        log.warning("could not abort on %s: %s", lane.transactional_id, exc.args[0].str())
                    replace.add(id(lane))
            lane.work = TxnWork()
            # aborted, or its producer is replaced: either way nothing is open on it any more (a
            # fenced lane left "in a transaction" at shutdown was committed by the revoke after it)
            lane.in_txn = False
        broken_lanes = [lane for lane in self._lanes if id(lane) in replace]
        if broken_lanes and why != "shutting down":
            self._replace(broken_lanes, why)
        if self._resize:  # batches must fit the smallest output topic again: new producers, sized
            self._resize = False
            conf = self._sizing()
            for lane in self._lanes:
                lane.reconfigure(conf)
                if lane not in broken_lanes:
                    lane.replace()
        self.metrics.aborted()
        if rewind:
            self._careful = True
            self._rewind()

    def _rewind(self) -> None:
        """After an abort: continue from the committed offsets, so aborted work is redone once."""
        consumer = self._consumer
        assert consumer is not None
        assignment = consumer.assignment()
        if not assignment:
            return
        try:
            committed: list[TopicPartition] = []
            retrying(
                lambda t: committed.extend(consumer.committed(assignment, timeout=t)),
                "reading offsets",
                self.opts.retry_s,
                self.opts.txn_call_timeout_s,
            )
            for tp in committed:
                offset = (
                    tp.offset
                    if tp.offset >= 0
                    else self._origins.get((tp.topic, tp.partition), OFFSET_BEGINNING)
                )
                try:
                    consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
                except KafkaException as exc:  # revoked meanwhile: its next owner starts from committed
                    log.warning("rewind %s[%d]: %s", tp.topic, tp.partition, exc.args[0].str())
        except StuckCall as exc:
            raise RouteError(
                f"could not rewind to the committed offsets after an abort: {exc}",
                hint="restart the router; it resumes from the committed offsets",
            ) from exc
        except KafkaException as exc:
            raise RouteError(
                f"could not rewind to the committed offsets after an abort: {exc.args[0].str()}",
                hint="restart the router; it resumes from the committed offsets",
            ) from exc

    # ------------------------------------------------------------------ rebalances

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", _tps(partitions))
        self._group_md = consumer.consumer_group_metadata()  # a new generation
        self.assigned |= {(tp.topic, tp.partition) for tp in partitions}
        self.metrics.health.set(True, f"assigned {len(self.assigned)} partition(s) of {self.opts.raw_topic}")
        if partitions:
            self._start_positions(consumer, partitions)

    def _start_positions(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Resolve ``auto.offset.reset`` for partitions without committed offsets ourselves, and
        assign them there, so :meth:`_rewind` knows where their routing began. Before, an abort
        with nothing committed yet rewound to the beginning of the partition whatever the setting."""
        reset = str(self.opts.consumer_conf.get("auto.offset.reset", self.opts.auto_offset_reset))
        try:
            committed = consumer.committed(partitions, timeout=self.opts.txn_call_timeout_s)
            for tp in committed:
                if tp.offset >= 0:
                    continue
                if reset in ("latest", "largest", "end"):
                    end = consumer.get_watermark_offsets(tp, timeout=self.opts.txn_call_timeout_s)[1]
                    tp.offset = self._origins[(tp.topic, tp.partition)] = end
                else:
                    self._origins[(tp.topic, tp.partition)] = OFFSET_BEGINNING
        except KafkaException as exc:  # librdkafka resolves the positions itself; the rewind falls back
            log.warning("resolving start positions at assignment: %s", exc.args[0].str())
            return
        consumer.assign(committed)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        log.info("revoking %s", _tps(partitions))
        self._drain()  # hand the partitions over with everything done so far committed
        self.assigned -= {(tp.topic, tp.partition) for tp in partitions}
        for tp in partitions:
            self.metrics.lag(tp.topic, tp.partition, None)

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        log.warning("lost %s (session timed out)", _tps(partitions))
        if self._inflight or any(lane.in_txn for lane in self._lanes):
            self._fail("partitions lost", rewind=False)
        self.assigned -= {(tp.topic, tp.partition) for tp in partitions}
        for tp in partitions:  # their new owner reports their lag
            self.metrics.lag(tp.topic, tp.partition, None)
        self.metrics.health.set(False, "lost its partitions (session timed out); rejoining the group")

    # ------------------------------------------------------------------ reload

    def _maybe_reload(self) -> None:
        assert self._table is not None
        stamp = file_stamp(self.path)
        if stamp is None or stamp == self._table.filters.stamp:
            return
        try:
            table = self._prepare_table(compile_filters_file(self.path))
        except CdcrouterError as exc:
            log.error("filters reload rejected, keeping the previous filters:\n%s", exc.render())
            self.metrics.reload("rejected")
            # remember the stamp so the same broken file is reported once
            self._table = _Table(
                CompiledFilters(
                    self._table.filters.routes, self._table.filters.match, self._table.filters.source, stamp
                ),
                self._table.routes,
            )
            return
        self._table = table
        self.metrics.reload("applied")
        log.info("filters reloaded from %s: %d filter(s)", self.path, len(table.routes))


def _too_large(topic: str, size: int, max_bytes: int) -> str:
    return (
        f"record of {size} bytes is larger than {topic} accepts "
        f"({max_bytes + BATCH_OVERHEAD} max.message.bytes, less {BATCH_OVERHEAD} for the batch)"
    )


def _rejection(rejected: dict[str, str]) -> str:
    """One dead letter's reason for every filter that could not get the record."""
    return "; ".join(f"filter {fid}: {why}" for fid, why in sorted(rejected.items()))


def _tps(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
