"""The embedded routing engine: raw topic -> compiled filters -> filtered topics, exactly once.

One instance = one read_committed consumer in the routing group + one transactional producer with
a stable ``transactional.id`` (``cdcrouter-router.<group>.<instance>``). Every transaction holds
the filtered records, the dead-letter records and the consumer offsets of the raw records they came
from (``send_offsets_to_transaction`` with the consumer's group metadata, KIP-447): either all of
it becomes visible or none of it does, and a zombie from an older group generation is fenced by
the broker.

A transaction is committed when the consumer has caught up, when it is ``max_txn_ms`` old, or when
it holds ``max_txn_events`` records: small transactions (low latency) when traffic is light, big
ones (throughput) under load. On a rebalance the open transaction is committed before partitions
are given away; when a commit fails, the transaction is aborted and the consumer rewinds to the
committed offsets, so nothing is lost or doubled. Filters reload only between transactions.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from cdcrouter.errors import CdcrouterError, RouteError
from cdcrouter.route.codec import DecodeError, RawDecoder, encode_filtered
from cdcrouter.route.filterset import CompiledFilters, compile_filters_file, file_stamp
from cdcrouter.route.metrics import RouterMetrics
from cdcrouter.route.wire import MetadataEncoder, header
from cdcrouter.schemas import filtered_schema_text
from cdcrouter.schemas.registry import RegistryClient, subject_for

__all__ = ["DEFAULT_GROUP", "DEFAULT_RAW_TOPIC", "Router", "RouterOptions", "dlq_topic_for"]

log = logging.getLogger("cdcrouter.route")

DEFAULT_RAW_TOPIC = "raw-business-events"
DEFAULT_GROUP = "cdcrouter-router"
ERROR_HEADER = "cdcrouter.error"


def dlq_topic_for(raw_topic: str) -> str:
    """The router's dead-letter topic for undecodable raw records."""
    return f"{raw_topic}.router.dlq"


@dataclass
class RouterOptions:
    raw_topic: str = DEFAULT_RAW_TOPIC
    group_id: str = DEFAULT_GROUP
    instance_id: str = "0"  # stable per instance: a restart with the same id fences its own zombie
    dlq_topic: str | None = None  # default: <raw>.router.dlq
    max_txn_ms: int = 100
    max_txn_events: int = 50_000
    batch_size: int = 2_000
    reload: bool = True
    reload_check_ms: int = 500
    log_interval_s: float = 10.0
    metrics_port: int | None = None
    transaction_timeout_ms: int = 60_000  # > a broker restart; a restart with the same id aborts at once
    retry_s: float = 120.0  # how long retriable transaction errors (broker restart) are retried
    # Hard limit per transactional call. librdkafka does not always honour its own timeout (a
    # send_offsets_to_transaction waiting for a stale group coordinator after a broker restart never
    # returns, librdkafka #5456/#5511); past this limit the producer is abandoned and replaced.
    txn_call_timeout_s: float = 20.0
    auto_offset_reset: str = "earliest"
    consumer_conf: dict[str, Any] = field(default_factory=dict)
    producer_conf: dict[str, Any] = field(default_factory=dict)

    @property
    def transactional_id(self) -> str:
        return f"cdcrouter-router.{self.group_id}.{self.instance_id}"

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
        self._schema_ids: dict[str, int] = {}
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._table: _Table | None = None
        self._in_txn = False
        self._txn_started = 0.0
        self._offsets: dict[tuple[str, int], int] = {}
        self._pending_consumed = 0
        self._pending_dlq = 0
        self._pending_matched: Counter[str] = Counter()
        self._transactions = 0
        self.assigned: set[tuple[str, int]] = set()  # partitions this instance owns now
        self._first_at: float | None = None
        self._recoveries: list[float] = []
        self._producer_conf: dict[str, Any] = {}
        self._last_commit_at = 0.0
        self._abandoned: list[Producer] = []  # producers stuck in a call that never returned

    # ------------------------------------------------------------------ set-up

    def _prepare_table(self, filters: CompiledFilters) -> _Table:
        """Resolve every output topic's schema id and check the topics exist (no auto-creation)."""
        assert self._producer is not None
        missing = self._missing_topics([*filters.topics, self.opts.dlq])
        if missing:
            raise RouteError(
                f"topic(s) {', '.join(missing)} do not exist",
                hint="create them first: cdcrouter topics apply (topics are never auto-created)",
            )
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
                fid, spec.consumer_id, spec.topic, header(schema_id), MetadataEncoder(fid, spec.consumer_id)
            )
        return _Table(filters, routes)

    def _missing_topics(self, topics: list[str]) -> list[str]:
        assert self._producer is not None
        md = self._producer.list_topics(timeout=10)
        return [t for t in topics if t not in md.topics or md.topics[t].error is not None]

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
            **kafka,
            "transactional.id": self.opts.transactional_id,
            "transaction.timeout.ms": self.opts.transaction_timeout_ms,
            "linger.ms": 5,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "partitioner": "murmur2_random",  # the Java client's default: same key -> same partition
            # The coordinator answers CONCURRENT_TRANSACTIONS while the previous commit's markers are
            # written; the default 100 ms retry backoff then costs ~60 ms per transaction (measured).
            "retry.backoff.ms": 5,
            **self.opts.producer_conf,
        }
        self._producer_conf = producer_conf
        self._producer = self._new_producer()
        self._consumer = Consumer(consumer_conf)

    def _new_producer(self) -> Producer:
        producer = Producer(self._producer_conf)
        try:
            self._retrying(lambda t: producer.init_transactions(t), "starting transactions")
        except _StuckCall as exc:
            raise RouteError(
                f"cannot start transactions as {self.opts.transactional_id}: {exc}",
                hint="check that Kafka is up (cdcrouter stack status) and its transaction log is available",
            ) from exc
        except KafkaException as exc:
            raise RouteError(
                f"cannot start transactions as {self.opts.transactional_id}: {exc.args[0].str()}",
                hint="check that Kafka is up (cdcrouter stack status) and its transaction log is available",
            ) from exc
        return producer

    def _recover(self, err: KafkaError) -> None:
        """A fatal producer error (fenced, e.g. the coordinator expired the transaction during a
        broker outage): start a new producer with the same transactional.id and redo from the
        committed offsets. Repeated fencing means another live instance has our id: stop."""
        now = time.monotonic()
        self._recoveries = [t for t in self._recoveries if now - t < 300] + [now]
        if len(self._recoveries) > 3:
            raise RouteError(
                f"transactions of {self.opts.transactional_id} keep failing: {err.str()}",
                hint="another running instance probably uses the same --instance-id (each needs its own)",
            )
        if err.code() != KafkaError._TIMED_OUT:  # _abandon() has said why already
            log.warning(
                "producer failed fatally (%s); starting a new one and redoing uncommitted work", err.str()
            )
        if self._producer is not None and not any(p is self._producer for p in self._abandoned):
            self._producer.purge()
        self._producer = self._new_producer()
        self._in_txn = False
        self.metrics.aborted()
        self._reset_pending()
        self._rewind()

    # ------------------------------------------------------------------ run

    def run(
        self,
        stop: threading.Event | None = None,
        max_events: int | None = None,
        idle_timeout_s: float | None = None,
    ) -> RunStats:
        """Route until ``stop`` is set, ``max_events`` raw records are committed, or nothing arrived
        for ``idle_timeout_s`` seconds. The open transaction is committed before returning."""
        stop = stop or threading.Event()
        started = time.monotonic()
        filters = compile_filters_file(self.path)  # bad filters fail before touching Kafka
        self._clients()
        try:
            assert self._consumer is not None and self._producer is not None
            if self._missing_topics([self.opts.raw_topic]):
                raise RouteError(
                    f"raw topic {self.opts.raw_topic} does not exist",
                    hint="check --raw-topic / pipeline.yaml, or create it: cdcrouter topics apply",
                )
            self._table = self._prepare_table(filters)
            log.info(
                "routing %s with %d filter(s) from %s as %s (group %s)",
                self.opts.raw_topic,
                len(self._table.routes),
                self.path,
                self.opts.transactional_id,
                self.opts.group_id,
            )
            if self.opts.metrics_port:
                self.metrics.serve(self.opts.metrics_port)
            # Everything built so far lives as long as the router: move it out of the collector's
            # view so full collections (measured 17-38 ms pauses in capture) scan only new objects.
            gc.freeze()
            self._consumer.subscribe(
                [self.opts.raw_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            last_data = time.monotonic()
            next_reload = time.monotonic() + self.opts.reload_check_ms / 1000
            next_log = time.monotonic() + self.opts.log_interval_s
            batch = self.opts.batch_size
            while not stop.is_set():
                if self._in_txn:
                    msgs = self._consumer.consume(batch, 0)
                else:
                    first = self._consumer.poll(0.05)
                    msgs = [first] if first is not None else []
                    if first is not None:
                        msgs += self._consumer.consume(batch - 1, 0)
                if msgs:
                    last_data = time.monotonic()
                    if self._first_at is None:
                        self._first_at = last_data
                    try:
                        self._process(msgs)
                    except KafkaException as exc:  # the batch is redone from the committed offsets
                        err = exc.args[0]
                        if _is_fatal(err):
                            self._recover(err)
                            continue
                        if not err.txn_requires_abort():
                            raise
                        self._abort(err.str())
                        self._rewind()
                        continue
                if self._in_txn and (
                    len(msgs) < batch
                    or (time.monotonic() - self._txn_started) * 1000 >= self.opts.max_txn_ms
                    or self._pending_consumed >= self.opts.max_txn_events
                ):
                    self._commit()
                now = time.monotonic()
                if not self._in_txn:
                    if max_events is not None and self.metrics.consumed >= max_events:
                        break
                    if idle_timeout_s is not None and now - last_data >= idle_timeout_s:
                        break
                    if self.opts.reload and now >= next_reload:
                        next_reload = now + self.opts.reload_check_ms / 1000
                        self._maybe_reload()
                if now >= next_log:
                    next_log = now + self.opts.log_interval_s
                    log.info(
                        "routed: transactions=%d %s %s",
                        self._transactions,
                        self.metrics.commit_timing(),
                        self.metrics.summary(),
                    )
            if self._in_txn:
                self._commit()
        except KafkaException as exc:
            raise RouteError(
                f"Kafka failed while routing {self.opts.raw_topic}: {exc.args[0].str()}",
                hint="check the broker (cdcrouter stack status); a restart resumes from committed offsets",
            ) from exc
        finally:
            gc.unfreeze()  # a process that goes on (the demo, tests) collects normally again
            self._close()
        log.info("stopped: %s", self.metrics.summary())
        return RunStats(
            self.metrics.consumed,
            self.metrics.dead_lettered,
            dict(self.metrics.matched),
            self._transactions,
            time.monotonic() - started,
            (self._last_commit_at - self._first_at) if self._first_at is not None else 0.0,
        )

    def _close(self) -> None:
        if self._in_txn and self._producer is not None:
            try:
                self._abort("shutting down")
            except RouteError as exc:  # uncommitted work is redone by the next run; nothing is lost
                log.warning("%s", exc.message)
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None
        self._registry.close()

    # ------------------------------------------------------------------ per record

    def _process(self, msgs: list[Any]) -> None:
        """Route one consumed batch into the open transaction (begun here if none is open).

        The per-record loop is the engine's hot path: everything that does not change per record
        (bound methods, each route's framing and metadata bytes for this batch's ``filteredAt``)
        is looked up once per batch.
        """
        producer = self._producer
        assert producer is not None and self._table is not None
        routes = self._table.routes
        match = self._table.filters.match
        decode = self._decoder.decode
        offsets = self._offsets
        matched = self._pending_matched
        produce = producer.produce
        now_ms = time.time_ns() // 1_000_000  # filteredAt: one clock read per batch
        framing: dict[str, tuple[str, bytes, bytes]] = {}  # filter id -> (topic, header, metadata)
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
            if not self._in_txn:
                producer.begin_transaction()
                self._in_txn = True
                self._txn_started = time.monotonic()
            try:
                event, body, writer = decode(msg.value())
                ids = match(event)
            except DecodeError as exc:
                self._dead_letter(msg, str(exc))
                continue
            except CdcrouterError:
                raise
            except Exception as exc:  # an evaluator failure must not stop the stream or drop the record
                self._dead_letter(msg, f"filter evaluation failed: {exc!r}")
                continue
            if not ids:
                continue
            entities = event["eventBody"]["entities"]
            key = entities[0]["entityId"].encode() if entities else msg.key()
            for fid in ids:
                if writer.passthrough:
                    f = framing.get(fid)
                    if f is None:
                        route = routes[fid]
                        f = framing[fid] = (route.topic, route.header, route.meta.encode(now_ms))
                    topic = f[0]
                    out = b"".join((f[1], body, f[2]))
                else:
                    route = routes[fid]
                    topic = route.topic
                    meta = {"filterId": fid, "consumerId": route.consumer_id, "filteredAt": now_ms}
                    out = route.header + encode_filtered(event, meta)
                try:
                    produce(topic, out, key)
                except BufferError:
                    producer.poll(0.1)
                    produce(topic, out, key)
                matched[fid] += 1
        self._pending_consumed += len(msgs) - errors
        # The next offset per partition: its last record in the batch (a partition's records arrive
        # in order) wins; earlier ones are skipped without a dict write.
        for msg in reversed(msgs):
            if msg.error() is None:
                tp = (msg.topic(), msg.partition())
                if offsets.get(tp, -1) <= msg.offset():
                    offsets[tp] = msg.offset() + 1
        producer.poll(0)

    def _dead_letter(self, msg: Any, error: str) -> None:
        assert self._producer is not None
        headers = [
            *(msg.headers() or []),
            (ERROR_HEADER, error.encode()),
            ("cdcrouter.source.topic", msg.topic().encode()),
            ("cdcrouter.source.partition", str(msg.partition()).encode()),
            ("cdcrouter.source.offset", str(msg.offset()).encode()),
        ]
        self._producer.produce(self.opts.dlq, msg.value(), msg.key(), headers=headers)
        self._pending_dlq += 1
        log.warning(
            "dead-lettered %s[%d]@%d to %s: %s",
            msg.topic(),
            msg.partition(),
            msg.offset(),
            self.opts.dlq,
            error,
        )

    # ------------------------------------------------------------------ transactions

    def _commit(self) -> bool:
        producer, consumer = self._producer, self._consumer
        assert producer is not None and consumer is not None and self._table is not None
        positions = [TopicPartition(t, p, o) for (t, p), o in self._offsets.items()]
        began = time.monotonic()
        try:
            if positions:
                # fresh group metadata on every attempt: a rebalance after a coordinator move
                # changes the generation, and stale metadata would be fenced
                self._retrying(
                    lambda t: producer.send_offsets_to_transaction(
                        positions, consumer.consumer_group_metadata(), t
                    ),
                    "sending offsets",
                )
            self._retrying(lambda t: producer.commit_transaction(t), "committing")
        except _StuckCall as exc:
            self._abandon(producer, str(exc))
            return False
        except KafkaException as exc:
            err = exc.args[0]
            if err.txn_requires_abort():
                self._abort(err.str())
                self._rewind()
                return False
            if _is_fatal(err):
                self._recover(err)
                return False
            raise RouteError(
                f"transaction failed for {self.opts.transactional_id}: {err.str()}",
                hint="another instance may use the same --instance-id (each needs its own), "
                "or the broker fenced this one; restart it",
            ) from exc
        self._in_txn = False
        self._transactions += 1
        self._last_commit_at = time.monotonic()
        self.metrics.commit_took(self._last_commit_at - began)
        self.metrics.commit(
            self._pending_consumed, self._pending_dlq, self._pending_matched, self._table.labels
        )
        self._reset_pending()
        return True

    def _retrying(self, call: Any, what: str) -> None:
        """Run a transactional call ``call(timeout_s)``, retrying retriable errors (a broker restart)
        for ``retry_s``. Each attempt is bounded by ``txn_call_timeout_s`` even when librdkafka
        ignores the timeout it is given: then ``_StuckCall`` is raised and the producer must be
        replaced (it is still inside the call)."""
        deadline = time.monotonic() + self.opts.retry_s
        delay = 0.05
        while True:
            try:
                _bounded(call, self.opts.txn_call_timeout_s, what)
                return
            except KafkaException as exc:
                err = exc.args[0]
                if not err.retriable() or time.monotonic() >= deadline:
                    raise
                log.warning("%s: %s; retrying", what, err.str())
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _abandon(self, producer: Producer, why: str) -> None:
        """A transactional call did not return in time: leave that producer to its stuck thread
        (destroying it would block too), start a new one with the same transactional.id (its
        init_transactions fences the old epoch and aborts the open transaction) and redo the work
        from the committed offsets."""
        log.warning("%s; replacing the producer and redoing uncommitted work", why)
        self._abandoned.append(producer)
        self._recover(KafkaError(KafkaError._TIMED_OUT, why))

    def _abort(self, why: str) -> None:
        producer = self._producer
        assert producer is not None
        log.warning("aborting transaction: %s", why)
        try:
            self._retrying(lambda t: producer.abort_transaction(t), "aborting")
        except _StuckCall as exc:
            if why == "shutting down":
                raise RouteError(f"could not abort the transaction: {exc}") from exc
            self._abandon(producer, str(exc))
            return
        except KafkaException as exc:
            if _is_fatal(exc.args[0]) and why != "shutting down":
                self._recover(exc.args[0])
                return
            raise RouteError(f"could not abort the transaction: {exc.args[0].str()}") from exc
        self._in_txn = False
        self.metrics.aborted()
        self._reset_pending()

    def _reset_pending(self) -> None:
        self._offsets = {}
        self._pending_consumed = 0
        self._pending_dlq = 0
        self._pending_matched = Counter()

    def _rewind(self) -> None:
        """After an abort: continue from the committed offsets, so aborted work is redone once."""
        consumer = self._consumer
        assert consumer is not None
        assignment = consumer.assignment()
        if not assignment:
            return
        try:
            committed: list[TopicPartition] = []
            self._retrying(
                lambda t: committed.extend(consumer.committed(assignment, timeout=t)), "reading offsets"
            )
            for tp in committed:
                offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                try:
                    consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
                except KafkaException as exc:  # revoked meanwhile: its next owner starts from committed
                    log.warning("rewind %s[%d]: %s", tp.topic, tp.partition, exc.args[0].str())
        except _StuckCall as exc:
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
        self.assigned |= {(tp.topic, tp.partition) for tp in partitions}

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        log.info("revoking %s", _tps(partitions))
        if self._in_txn:
            self._commit()  # hand the partitions over with everything done so far committed
        self._offsets = {}
        self.assigned -= {(tp.topic, tp.partition) for tp in partitions}

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        log.warning("lost %s (session timed out)", _tps(partitions))
        if self._in_txn:
            self._abort("partitions lost")
        self.assigned -= {(tp.topic, tp.partition) for tp in partitions}

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


class _StuckCall(Exception):
    """A librdkafka call did not return within its hard limit (the producer is still inside it)."""


def _bounded(call: Any, limit_s: float, what: str) -> None:
    """``call(timeout)`` on a helper thread, waiting at most ``limit_s`` plus a grace period.

    librdkafka is given ``limit_s`` as its own timeout, but some calls ignore it (librdkafka #5456:
    the coordinator-request timeout is never checked; #5511: a stale cached group coordinator is
    never re-queried), so the caller cannot rely on it. The GIL is released inside the call."""
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            call(limit_s)
            result.append(None)
        except BaseException as exc:  # handed to the caller
            result.append(exc)

    worker = threading.Thread(target=run, name=f"cdcrouter-txn-{what}", daemon=True)
    worker.start()
    worker.join(limit_s + 5.0)
    if not result:
        raise _StuckCall(f"{what}: librdkafka call still blocked after {limit_s + 5.0:.0f} s")
    if result[0] is not None:
        raise result[0]


def _is_fatal(err: KafkaError) -> bool:
    """Fatal for the producer: produce() reports a fenced producer as _FATAL without the flag."""
    return bool(err.fatal()) or err.code() in (KafkaError._FATAL, KafkaError._FENCED)


def _tps(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
