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

This module holds the options, ``run()`` and the hot loop; the Router's other parts live beside it,
each readable alone: :mod:`~cdcrouter.route.setup` (routing table, clients, producer replacement),
:mod:`~cdcrouter.route.ordering` (hand-off, in-order commits, abort and rewind),
:mod:`~cdcrouter.route.refusals` (dead letters and records no retry can write) and
:mod:`~cdcrouter.route.rebalance` (group callbacks and live reload).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from cdcrouter.errors import CdcrouterError, RouteError
from cdcrouter.naming import DEFAULT_RAW_TOPIC
from cdcrouter.naming import router_dlq_topic as dlq_topic_for
from cdcrouter.route import takeover
from cdcrouter.route.codec import DecodeError, FilteredSchemas, RawDecoder
from cdcrouter.route.filterset import compile_filters_file
from cdcrouter.route.instance import InstanceLock, default_instance_id
from cdcrouter.route.lanes import Lane, is_fatal
from cdcrouter.route.limits import (
    RECORD_ERRORS,
    topic_limits,
)
from cdcrouter.route.metrics import RouterMetrics, e2e_bucket, e2e_counts
from cdcrouter.route.ordering import _Ordering
from cdcrouter.route.rebalance import _Rebalance
from cdcrouter.route.refusals import _Refusals, _rejection, _too_large
from cdcrouter.route.setup import _Setup, _Table
from cdcrouter.schemas.registry import RegistryClient
from cdcrouter.transactions import DEFAULT_ROUTER_TIMEOUT_MS

__all__ = ["DEFAULT_GROUP", "DEFAULT_RAW_TOPIC", "Router", "RouterOptions", "dlq_topic_for"]

log = logging.getLogger("cdcrouter.route")

DEFAULT_GROUP = "cdcrouter-router"


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
    # A transaction's fixed cost grows with the partitions it touches (librdkafka sends one
    # ProduceRequest per partition, five in flight, and the commit writes a marker to each): under a
    # backlog a transaction fills for at least ``fill_factor`` times what the last one took to deliver
    # and commit (at most ``max_fill_ms``), so that cost stays a bounded share of the time. A
    # transaction of a caught-up consumer is still due at once (latency).
    fill_factor: float = 2.0
    max_fill_ms: int = 5_000
    batch_size: int = 2_000
    reload: bool = True
    reload_check_ms: int = 500
    log_interval_s: float = 10.0
    metrics_port: int | None = None
    metrics_address: str = "127.0.0.1"  # 0.0.0.0 (or the pod's address) to be scraped from outside
    topic_wait_s: float = 20.0  # how long a starting router waits for its topics' metadata
    # how long a killed router's open transaction can block read_committed readers of the filtered
    # topics (cdcrouter/transactions.py); a restart with the same id, or a replica taking over its
    # partitions, aborts it sooner
    transaction_timeout_ms: int = DEFAULT_ROUTER_TIMEOUT_MS
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
    # From this many filters (a topic each) a consumed batch's records are queued per topic with one
    # call, below it one produce() per record. Queueing cost per record, measured without a broker:
    # produce() 0.75 us at 20 topics, 4.06 at 1,000; per topic (a dict per record + produce_batch)
    # 1.05 and 2.01.
    batched_from_filters: int = 100

    def fill_ms(self, last_cost_ms: float) -> float:
        """How old a transaction gets under a backlog, after one that took ``last_cost_ms`` to
        deliver and commit: ``fill_factor`` times that, within ``[max_txn_ms, max_fill_ms]``."""
        return min(float(self.max_fill_ms), max(float(self.max_txn_ms), self.fill_factor * last_cost_ms))

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


@dataclass
class RunStats:
    consumed: int
    dead_lettered: int
    matched: dict[str, int]
    transactions: int
    seconds: float
    active_seconds: float  # first record consumed -> last commit: the routing time without start-up


class Router(_Setup, _Refusals, _Ordering, _Rebalance):
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
        self._fill_ms = float(self.opts.max_txn_ms)  # how old a transaction under a backlog gets
        self._checked_topics = False  # run() found every topic: one missing later was deleted
        # takeover (route/takeover.py): the group's other instances seen at the last assignment, the
        # departed ones already fenced, and the tag this instance's commits carry
        self._peers: dict[str, takeover.Owner] = {}
        self._fenced: set[str] = set()
        self._owner_tag = takeover.Owner(self.opts.instance_id, self.opts.lanes).tag()

    @property
    def _fill(self) -> Lane:
        return self._lanes[self._fill_at]

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
        if self.opts.transaction_timeout_ms <= 2 * self.opts.max_fill_ms:
            raise RouteError(
                f"transaction timeout {self.opts.transaction_timeout_ms} ms is too short: under a backlog "
                f"a transaction fills for up to {self.opts.max_fill_ms} ms before it is delivered and "
                "committed, and the broker would abort it",
                hint=f"use a --transaction-timeout-ms above {2 * self.opts.max_fill_ms} (default "
                f"{DEFAULT_ROUTER_TIMEOUT_MS})",
            )
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
                or (time.monotonic() - fill.started) * 1000 >= self._fill_ms
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
        is looked up once per batch. With many filters the outputs are queued per topic at the end
        of the batch (:meth:`Lane.produce_batches`); a redo after a failure produces record by
        record, each record's delivery watched.
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
        # Many topics: topic -> its records from this batch, in order, queued per topic at the end
        # (Lane.produce_batches). produce() finds its topic by name in a list, on every call.
        batched = not careful and self._many_topics(routes)
        batches: dict[str, list[dict[str, Any]]] = {}
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
                if batched:
                    pending = batches.get(topic)
                    if pending is None:
                        pending = batches[topic] = []
                    pending.append({"value": out, "key": key})
                else:
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
        if batches:
            lane.produce_batches(batches)
        work.consumed += len(msgs) - errors
        # The next offset per partition: its last record in the batch (a partition's records arrive
        # in order) wins; earlier ones are skipped without a dict write.
        for msg in reversed(msgs):
            if msg.error() is None:
                tp = (msg.topic(), msg.partition())
                if offsets.get(tp, -1) <= msg.offset():
                    offsets[tp] = msg.offset() + 1
        lane.poll(0)
