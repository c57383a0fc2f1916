"""Router set-up: the routing table (filter -> topic, schema id, size limit), the clients, and new
producers for lanes that failed. Read with :mod:`cdcrouter.route.engine`, which runs it.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient

from cdcrouter.errors import RouteError
from cdcrouter.route import takeover
from cdcrouter.route.filterset import CompiledFilters
from cdcrouter.route.lanes import Lane, StuckCall
from cdcrouter.route.limits import (
    BATCH_OVERHEAD,
    producer_sizing,
    topic_limits,
)
from cdcrouter.route.wire import MetadataEncoder, header
from cdcrouter.schemas import filtered_schema_text
from cdcrouter.schemas.registry import subject_for
from cdcrouter.transactions import is_timeout_refused, timeout_refused

log = logging.getLogger("cdcrouter.route")


@dataclass(frozen=True)
class _Route:
    filter_id: str
    consumer_id: str
    topic: str
    header: bytes  # Confluent header with the filtered schema's id for this topic
    meta: MetadataEncoder
    max_bytes: int  # key + value this topic accepts: its max.message.bytes less a batch's overhead


@dataclass(frozen=True)
class _Table:
    filters: CompiledFilters
    routes: dict[str, _Route]

    @property
    def labels(self) -> dict[str, tuple[str, str]]:
        return {fid: (r.consumer_id, r.topic) for fid, r in self.routes.items()}


class _Setup:
    """The Router's set-up: everything resolved before a record is routed (and again on reload)."""

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
            "client.id": takeover.client_id(self.opts.instance_id),  # who is alive (route/takeover.py)
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": self.opts.auto_offset_reset,
            "fetch.wait.max.ms": 100,
            "queued.min.messages": 20_000,
            # Once 20,000 records are queued librdkafka pauses fetching for this long (default 1 s):
            # the router drains that in ~0.2 s and then sat idle; measured 31k -> 61k events/s.
            "fetch.queue.backoff.ms": 5,
            # Bounded prefetch (memory, issue #17): librdkafka's defaults allow 64 MB queued and
            # 50 MB per fetch response. 20,000 records of ~300 bytes are ~6 MB; a larger record
            # still comes through (a fetch returns at least one record whatever its size).
            "queued.max.messages.kbytes": 16_384,
            "fetch.max.bytes": 8_388_608,
            "session.timeout.ms": 15_000,
            **self.opts.consumer_conf,
        }
        producer_conf = {
            **self.conns.kafka.producer_conf(),
            "transaction.timeout.ms": self.opts.transaction_timeout_ms,
            "linger.ms": self._linger_ms(),
            "batch.num.messages": 10_000,
            # Bounded per lane (memory, issue #17): a 50,000-event transaction with ~2 outputs per
            # event is ~30 MB; beyond this bound produce() raises BufferError and the loop polls.
            "queue.buffering.max.messages": 200_000,
            "queue.buffering.max.kbytes": 65_536,
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

    def _linger_ms(self) -> int:
        """How long a partition's records wait for more before they are sent while a transaction
        fills (the hand-off's flush sends everything at once, whatever this is).

        From ``batched_from_filters`` filters on: 1 s, so a transaction's records go out in about one
        ProduceRequest per partition. Each request wakes the producer's broker thread, which then
        walks every partition it holds (librdkafka's rd_kafka_toppar_producer_serve): at 1,000
        single-partition topics those walks were a third of the router's CPU. Measured at 1,000
        filters: 44.7 -> 32.0 us of CPU per event (docs/routing.md, "Many consumers"). Below that,
        5 ms: records leave while the transaction fills, so a commit's flush is short (latency)."""
        assert self._table is not None
        return 1000 if self._many_topics(self._table.routes) else 5

    def _many_topics(self, routes: Any) -> bool:
        """From ``batched_from_filters`` filters on, the router works for many output topics: lanes
        linger while a transaction fills, and a batch's records are queued per topic."""
        return len(routes) >= self.opts.batched_from_filters

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
            if is_timeout_refused(exc.args[0]):
                message, hint = timeout_refused(
                    f"cannot start transactions as {lane.transactional_id}",
                    "--transaction-timeout-ms (or transactions.router_timeout_ms in pipeline.yaml)",
                    self.opts.transaction_timeout_ms,
                    self.conns.kafka.to_librdkafka(),
                )
                raise RouteError(message, hint=hint) from exc
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
