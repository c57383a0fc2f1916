"""Transaction lanes: each one transactional producer, so one batch is produced while the last commits.

A transaction over many partitions takes tens of milliseconds to commit: librdkafka sends one
ProduceRequest per partition, at most five in flight, and then EndTxn. With a single producer the
router stood still meanwhile, and every record waited for the commit in progress and then for its
own. With two lanes the next batch is produced on the other lane's connection while the previous one
commits, so its own commit is little more than EndTxn.

The router keeps the commits strictly in order (a lane commits only after the lane before it has
committed, and at most one commit is in flight), so the group's committed offsets never pass a
record whose output is not committed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

__all__ = ["Lane", "StuckCall", "TxnWork", "bounded", "is_fatal", "kafka_error_of", "retrying"]

log = logging.getLogger("cdcrouter.route")


class StuckCall(Exception):
    """A librdkafka call did not return within its hard limit (the producer is still inside it)."""


@dataclass
class TxnWork:
    """What one open transaction holds: the next offset per raw partition and the counts to publish
    once it commits."""

    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    consumed: int = 0
    dead_lettered: int = 0
    matched: Counter[str] = field(default_factory=Counter)
    # per filter: its records' filteredAt - createdDate as route.metrics.e2e_counts (buckets, sum)
    e2e: dict[str, list[int]] = field(default_factory=dict)


class Lane:
    """One transactional producer (its own ``transactional.id``) and the transaction it holds."""

    def __init__(self, transactional_id: str, conf: dict[str, Any], retry_s: float, call_limit_s: float):
        self.transactional_id = transactional_id
        self._conf = {**conf, "transactional.id": transactional_id}
        self._retry_s = retry_s
        self._limit_s = call_limit_s
        self.producer: Producer | None = None
        self.in_txn = False
        self.started = 0.0  # monotonic time the open transaction began
        self.handed_off = 0.0  # ... was handed to the committer
        self.commit_began = 0.0  # ... the committer began committing it
        self.offsets_s = 0.0  # how long its last commit spent sending the consumer offsets
        self.delivered_s = 0.0  # how long the hand-off waited for its records to be acknowledged
        self.work = TxnWork()
        self.abandoned: list[Producer] = []  # producers stuck in a call that never returned

    def start(self) -> None:
        """A new producer; ``init_transactions`` fences an older one with this id and aborts its
        open transaction (a killed process, a stuck producer)."""
        producer = Producer(self._conf)
        self.call(lambda t: producer.init_transactions(t), "starting transactions")
        self.producer = producer
        self.in_txn = False
        self.work = TxnWork()

    def begin(self) -> None:
        assert self.producer is not None
        self.producer.begin_transaction()
        self.in_txn = True
        self.started = time.monotonic()

    def commit(self, positions: list[Any], group_metadata: Any) -> float:
        """Send the offsets and commit; the seconds it took.

        ``group_metadata(fresh)`` gives the consumer's group metadata: the cached one on the first
        attempt (asking the consumer took 7 ms at the median and up to 2 s, measured), a fresh one on
        a retry, since a rebalance after a coordinator move changes the generation and stale
        metadata would be fenced."""
        producer = self.producer
        assert producer is not None
        began = self.commit_began = time.monotonic()
        attempts = 0

        def send_offsets(timeout_s: float) -> None:
            nonlocal attempts
            attempts += 1
            producer.send_offsets_to_transaction(positions, group_metadata(attempts > 1), timeout_s)

        if positions:
            self.call(send_offsets, "sending offsets")
        self.offsets_s = time.monotonic() - began
        self.call(lambda t: producer.commit_transaction(t), "committing")
        self.in_txn = False
        return time.monotonic() - began

    def deliver(self, timeout_s: float) -> int:
        """Wait until the open transaction's records are acknowledged; how many are not yet."""
        producer = self.producer
        assert producer is not None
        try:
            return int(producer.flush(timeout_s))
        except SystemError as exc:
            raise kafka_error_of(exc) from None

    def produce_batches(self, batches: dict[str, list[dict[str, Any]]]) -> None:
        """Queue each topic's records (``{"value", "key"}`` dicts, in routing order) with one call
        per topic.

        ``produce()`` finds its topic by name in a list of all the producer's topics, on every call:
        3.3 us more per record at 1,000 topics than at 20 (measured), ~8 us per routed event;
        ``produce_batch`` looks the topic up once per call. Records the queue had no room for are
        queued again, in order, once deliveries have made room; any other refusal raises, and the
        caller aborts and redoes the batch record by record (where a record's refusal is handled)."""
        producer = self.producer
        assert producer is not None
        produce_batch = producer.produce_batch
        for topic, msgs in batches.items():
            deadline = 0.0
            while True:
                if produce_batch(topic, msgs) == len(msgs):
                    break
                failed = [i for i, m in enumerate(msgs) if "_error" in m]
                err = msgs[failed[0]]["_error"]
                # only a full queue from some record on can be waited out without reordering a key
                if err.code() != KafkaError._QUEUE_FULL or len(failed) != len(msgs) - failed[0]:
                    raise KafkaException(err)
                now = time.monotonic()
                deadline = deadline or now + self._limit_s
                if now >= deadline:
                    raise KafkaException(err)
                msgs = msgs[failed[0] :]
                for m in msgs:
                    del m["_error"]
                self.poll(0.1)

    def poll(self, timeout_s: float) -> None:
        """Serve the producer's delivery callbacks."""
        producer = self.producer
        assert producer is not None
        try:
            producer.poll(timeout_s)
        except SystemError as exc:
            raise kafka_error_of(exc) from None

    def serve_reports(self) -> None:
        """Run the delivery callbacks of records the broker has answered (a stuck producer's are lost)."""
        if self.producer is not None and not self.stuck:
            # the failure being handled anyway; the next call on this producer reports it again
            with contextlib.suppress(KafkaException, SystemError):
                self.producer.poll(0)

    def abort(self) -> None:
        """Abort the open transaction, retrying for one call's limit only: a producer that cannot
        abort by then is replaced, and the new one's ``init_transactions`` aborts the transaction
        on the broker. After a broker restart one producer's coordinator request sat unsent for the
        whole 120 s retry window (its other requests too) while every other client went on."""
        producer = self.producer
        assert producer is not None
        retrying(lambda t: producer.abort_transaction(t), "aborting", self._limit_s, self._limit_s)
        self.in_txn = False

    @property
    def stuck(self) -> bool:
        """Is the current producer one left to a call that never returned?"""
        return any(p is self.producer for p in self.abandoned)

    def replace(self) -> None:
        """Drop this lane's producer (purged, or left to its stuck thread) and start a new one."""
        if self.producer is not None and not self.stuck:
            self.producer.purge()
        self.producer = None
        self.start()

    def reconfigure(self, conf: dict[str, Any]) -> None:
        """Settings for the lane's next producer (see :meth:`replace`)."""
        self._conf.update(conf)

    def abandon(self) -> None:
        """The producer is stuck inside a call: destroying it would block too, so leave it be."""
        if self.producer is not None:
            self.abandoned.append(self.producer)

    def call(self, call: Any, what: str) -> None:
        retrying(call, what, self._retry_s, self._limit_s)


def retrying(call: Any, what: str, retry_s: float, limit_s: float) -> None:
    """Run a transactional call ``call(timeout_s)``, retrying retriable errors (a broker restart) for
    ``retry_s``. Each attempt is bounded by ``limit_s`` even when librdkafka ignores the timeout it
    is given: then :class:`StuckCall` is raised and the producer must be replaced."""
    deadline = time.monotonic() + retry_s
    delay = 0.05
    while True:
        try:
            bounded(call, limit_s, what)
            return
        except KafkaException as exc:
            err = exc.args[0]
            if not err.retriable() or time.monotonic() >= deadline:
                raise
            log.warning("%s: %s; retrying", what, err.str())
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def bounded(call: Any, limit_s: float, what: str) -> None:
    """``call(timeout)`` on a helper thread, waiting at most ``limit_s`` plus a grace period.

    librdkafka is given ``limit_s`` as its own timeout, but some calls ignore it (librdkafka #5456:
    the coordinator-request timeout is never checked; #5511: a stale cached group coordinator is
    never re-queried), so the caller cannot rely on it. The GIL is released inside the call."""
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            call(limit_s)
            result.append(None)
        except SystemError as exc:
            result.append(kafka_error_of(exc))
        except BaseException as exc:  # handed to the caller
            result.append(exc)

    worker = threading.Thread(target=run, name=f"cdcrouter-txn-{what}", daemon=True)
    worker.start()
    worker.join(limit_s + 5.0)
    if not result:
        raise StuckCall(f"{what}: librdkafka call still blocked after {limit_s + 5.0:.0f} s")
    if result[0] is not None:
        raise result[0]


def kafka_error_of(exc: SystemError) -> BaseException:
    """The Kafka error behind a SystemError from a producer call.

    When a call (flush, poll, a transactional call) meets a fatal error such as a fence,
    confluent-kafka sets the KafkaException and then still runs the delivery callbacks of the
    purged records; the first C call in a Python callback fails with SystemError, chained to the
    KafkaException. That KafkaException is the real outcome of the call."""
    cause = exc.__cause__ or exc.__context__
    return cause if isinstance(cause, KafkaException) else exc


def is_fatal(err: KafkaError) -> bool:
    """Fatal for the producer: produce() reports a fenced producer as _FATAL without the flag."""
    return bool(err.fatal()) or err.code() in (KafkaError._FATAL, KafkaError._FENCED)
