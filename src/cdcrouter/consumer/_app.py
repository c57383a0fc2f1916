"""``ConsumerApp``: handlers for filtered topics, with commits, retries, a dead-letter topic and metrics.

Delivery contract, in order, for each batch of records:

1. decode (Avro through the registry); an undecodable record goes to the DLQ at once;
2. run the matching handler, inside the idempotency store's transaction when there is one;
3. on failure retry with exponential backoff, then produce the record to ``<topic>.<consumer>.dlq``
   and wait for the broker's acknowledgement;
4. only then commit the batch's offsets, per partition, synchronously.

A crash anywhere before step 4 redelivers the batch (at-least-once); the idempotency store turns
that into effectively-once for handlers that write through ``ctx.conn``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from cdcrouter.config import Connections, load_connections
from cdcrouter.consumer import _dlq, _kafka, _metrics
from cdcrouter.consumer._errors import ConsumerError, DecodeError, HandlerFailed
from cdcrouter.consumer._event import Event, Origin
from cdcrouter.consumer._serde import RegistryClient, decode
from cdcrouter.consumer._store import IdempotencyStore
from cdcrouter.observe import logs
from cdcrouter.observe.endpoint import Heartbeat

_TOO_LARGE = (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE)

log = logging.getLogger("cdcrouter.consumer")

# Test hook: SIGKILL this process after N handled records, right before the offset commit.
KILL_BEFORE_COMMIT_ENV = "CDCROUTER_TEST_KILL_BEFORE_COMMIT"


@dataclass(frozen=True, slots=True)
class Context:
    """What a two-argument handler gets besides the event."""

    consumer: str
    origin: Origin
    attempt: int
    conn: Any = None  # the idempotency store's DB connection, inside its transaction (PostgresStore)


Handler = Callable[..., Any]


class _Record(Protocol):
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> list[tuple[str, bytes]] | None: ...
    def timestamp(self) -> tuple[int, int]: ...


@dataclass
class Stats:
    """Counters of one app (the Prometheus metrics carry the same, labelled by consumer)."""

    processed: int = 0
    duplicates: int = 0
    unhandled: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    commits: int = 0
    last_dead_letter: dict[str, str] = field(default_factory=dict)

    @property
    def handled(self) -> int:
        """Records whose fate is settled (what ``max_messages`` counts)."""
        return self.processed + self.duplicates + self.unhandled + self.dead_lettered


_ABORTED = object()
_FAILED = object()


def _first_of_each(events: list[Event]) -> list[Event]:
    """Drop repeats of a uuid within one batch (the same event delivered twice in one poll)."""
    seen: set[str] = set()
    out = []
    for e in events:
        if e.uuid not in seen:
            seen.add(e.uuid)
            out.append(e)
    return out


def _wants_ctx(fn: Handler) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


class ConsumerApp:
    """A consumer of one or more filtered topics.

    Args:
        name: the consumer's identity: default group id, metric label, DLQ topic part, store key.
        connections: where Kafka, the registry (and PostgreSQL) are; ``load_connections()`` if None.
        group: the consumer group (default ``name``); instances in one group split the partitions.
        store: an idempotency store (``PostgresStore``/``MemoryStore``); None processes every delivery.
        retries: handler retries after the first failure, before dead-lettering.
        backoff: first retry delay in seconds, doubled per retry up to ``backoff_max``.
        dlq: dead-letter failed records (True) or stop the app with ``HandlerFailed`` (False).
        max_batch: records per poll; offsets are committed once per batch.
        batch_timeout: seconds a poll waits to fill a batch.
        from_beginning: where a new group starts (earliest, else latest).
        metrics_port: serve Prometheus ``/metrics`` at this port.
        metrics_address: the address for ``metrics_port``: default ``CDCROUTER_METRICS_ADDRESS``, else
            127.0.0.1; 0.0.0.0 serves every interface (a pod's metrics must be scrapable).
        kafka_config: extra librdkafka consumer settings.
    """

    def __init__(
        self,
        name: str,
        connections: Connections | None = None,
        *,
        group: str | None = None,
        store: IdempotencyStore | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        dlq: bool = True,
        max_batch: int = 100,
        batch_timeout: float = 1.0,
        from_beginning: bool = True,
        metrics_port: int | None = None,
        metrics_address: str | None = None,
        kafka_config: dict[str, Any] | None = None,
    ) -> None:
        self.name = _kafka.check_name("consumer name", name)
        self.connections = connections or load_connections()
        self.group = group or name
        self.store = store
        self.retries, self.backoff, self.backoff_max = retries, backoff, backoff_max
        self.dlq = dlq
        self.max_batch, self.batch_timeout = max_batch, batch_timeout
        self.from_beginning = from_beginning
        self.metrics_port = metrics_port
        self.metrics_address = metrics_address
        self.health = Heartbeat(reason="not assigned by its group yet")  # /readyz
        self.kafka_config = dict(kafka_config or {})
        self.stats = Stats()
        self._handlers: dict[tuple[str, str | None], Handler] = {}
        self._batch_handlers: dict[str, Handler] = {}
        self._wants_ctx: dict[Handler, bool] = {}
        self._stop = threading.Event()
        self._registry: RegistryClient | None = None
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._pending: dict[tuple[str, int], int] = {}
        self._assigned: set[tuple[str, int]] = set()
        self._closing = False
        self._kill_after = int(os.environ.get(KILL_BEFORE_COMMIT_ENV, "0") or 0)

    # -- registration -----------------------------------------------------------------------

    def on(self, topic: str, event: str | Iterable[str] | None = None) -> Callable[[Handler], Handler]:
        """Register a handler for ``topic``, optionally only for the given event name(s).

        A handler takes ``(event)`` or ``(event, ctx)``. A handler for an event name wins over the
        topic-wide one; events with no handler are counted as unhandled and committed.
        """
        _kafka.check_name("topic", topic)
        names: list[str | None] = [event] if event is None or isinstance(event, str) else list(event)

        def register(fn: Handler) -> Handler:
            for n in names:
                if (topic, n) in self._handlers or topic in self._batch_handlers:
                    raise ConsumerError(
                        f"{self.name}: two handlers for topic {topic} event {n or '*'}",
                        hint="merge them or register different event names",
                    )
                self._handlers[(topic, n)] = fn
            self._wants_ctx[fn] = _wants_ctx(fn)
            return fn

        return register

    def on_batch(self, topic: str) -> Callable[[Handler], Handler]:
        """Register a handler that takes all of a poll's events of ``topic`` at once.

        It gets ``(events)`` or ``(events, ctx)`` (``ctx.origin`` is the first event's), in
        partition order; with an idempotency store only the events not processed before, in one
        store transaction (one ``ctx.conn`` commit for the whole batch). When it keeps failing,
        each event is retried alone so that only the bad one is dead-lettered. A topic has either
        a batch handler or per-event handlers.
        """
        _kafka.check_name("topic", topic)

        def register(fn: Handler) -> Handler:
            if topic in self._batch_handlers or any(t == topic for t, _ in self._handlers):
                raise ConsumerError(
                    f"{self.name}: topic {topic} already has a handler",
                    hint="use either one on_batch handler or on() handlers per topic",
                )
            self._batch_handlers[topic] = fn
            self._wants_ctx[fn] = _wants_ctx(fn)
            return fn

        return register

    @property
    def topics(self) -> list[str]:
        return sorted({t for t, _ in self._handlers} | set(self._batch_handlers))

    def dlq_topic(self, topic: str) -> str:
        return _dlq.dlq_topic(topic, self.name)

    # -- lifecycle ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask ``run`` to finish the current batch, commit and return (thread- and signal-safe)."""
        self._stop.set()

    def run(self, timeout: float | None = None, max_messages: int | None = None) -> Stats:
        """Consume until stopped (SIGTERM/SIGINT/``stop()``), ``timeout`` seconds or ``max_messages``.

        Returns the app's :class:`Stats`. Signal handlers are installed only on the main thread.
        """
        if not self.topics:
            raise ConsumerError(
                f"{self.name}: no handlers registered", hint="decorate one with @app.on(topic)"
            )
        logs.configure_if_unset()  # CDCROUTER_LOG_FORMAT=json works for a script's app.run() too
        self._stop.clear()
        restore = self._install_signals()
        try:
            self.open()
            self._loop(timeout, max_messages)
        finally:
            self.close()
            for sig, previous in restore:
                signal.signal(sig, previous)
        return self.stats

    def __enter__(self) -> ConsumerApp:
        self.open(subscribe=False)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _install_signals(self) -> list[tuple[int, Any]]:
        if threading.current_thread() is not threading.main_thread():
            return []
        restore = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            restore.append((sig, signal.getsignal(sig)))
            signal.signal(sig, lambda *_: self.stop())
        return restore

    def open(self, subscribe: bool = True) -> None:
        """Connect; without ``subscribe`` only the registry and DLQ producer (to call ``handle``)."""
        if subscribe:  # fail fast: a subscription to a missing topic would just wait silently
            for topic in self.topics:
                _kafka.partitions_of(self.connections, topic)
        if self.metrics_port:
            _metrics.serve(self.metrics_port, self.metrics_address, name=self.name, ready=self.health)
        self._registry = RegistryClient(self.connections.registry)
        if self.dlq:
            limit = {"max.message.bytes": str(_kafka.DLQ_MAX_MESSAGE_BYTES)}
            for topic in self.topics:
                _kafka.ensure_topic(self.connections, self.dlq_topic(topic), config=limit)
            # librdkafka's 1 MB default would refuse to dead-letter any larger event
            self._producer = Producer(
                _kafka.producer_conf(self.connections, **{"message.max.bytes": _kafka.DLQ_MAX_MESSAGE_BYTES})
            )
        if not subscribe:
            return
        conf = _kafka.consumer_conf(
            self.connections,
            self.group,
            **{"auto.offset.reset": "earliest" if self.from_beginning else "latest"},
            **{"partition.assignment.strategy": "cooperative-sticky"},
        )
        conf.update(self.kafka_config)
        self._consumer = Consumer(conf)
        self._consumer.subscribe(
            self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def close(self) -> None:
        if self._consumer is not None:
            self._closing = True  # keep the last lag readings visible after a stop
            try:
                self._commit()
            finally:
                self._consumer.close()  # leaves the group at once: partitions move without a timeout
                self._consumer = None
                self._assigned.clear()
                self._closing = False
                self.health.set(False, "stopped")
        if self._producer is not None:
            self._producer.flush(30)
            self._producer = None
        if self._registry is not None:
            self._registry.close()
            self._registry = None

    @property
    def assignment(self) -> set[tuple[str, int]]:
        """The ``(topic, partition)`` pairs this instance owns right now."""
        return set(self._assigned)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned |= {(p.topic, p.partition) for p in partitions}
        self.health.set(True, f"assigned {len(self._assigned)} partition(s)")
        log.info("%s: assigned %s", self.name, sorted(self._assigned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Revocation happens inside poll, between batches: commit what is done, forget the rest.
        self._assigned -= {(p.topic, p.partition) for p in partitions}
        for p in partitions if not self._closing else ():  # another member reports their lag now
            with contextlib.suppress(KeyError):
                _metrics.LAG.remove(self.name, p.topic, str(p.partition))
        self._commit(partitions={(p.topic, p.partition) for p in partitions}, consumer=consumer)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The group already gave these away (session timed out): a commit would be refused, and
        # the new owner re-reads what was not committed.
        self._assigned -= {(p.topic, p.partition) for p in partitions}
        for p in partitions:
            self._pending.pop((p.topic, p.partition), None)
        log.warning(
            "%s: lost %d partition(s); their uncommitted records will be redelivered",
            self.name,
            len(partitions),
        )

    # -- the loop -----------------------------------------------------------------------------

    def _loop(self, timeout: float | None, max_messages: int | None) -> None:
        assert self._consumer is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        start = self.stats.handled
        while not self._stop.is_set():
            self.health.beat()
            wait = self.batch_timeout
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    break
            want = self.max_batch
            if max_messages is not None:
                want = min(want, max_messages - (self.stats.handled - start))
                if want <= 0:
                    break
            try:
                batch = self._consumer.consume(num_messages=want, timeout=wait)
            except KafkaException as exc:
                raise ConsumerError(f"{self.name}: consume failed: {exc}") from exc
            self._process(batch)
            if batch:
                self._maybe_die()
                self._commit()
                self._update_lag()

    def _process(self, batch: list[Message]) -> None:
        """Handle one poll's records; mark offsets done only for records whose fate is settled."""
        grouped: dict[str, list[tuple[Message, Event | None]]] = {}
        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise ConsumerError(f"{self.name}: fatal Kafka error: {err}")
                log.warning("%s: %s", self.name, err)
                continue
            topic = msg.topic() or ""
            if topic in self._batch_handlers:
                grouped.setdefault(topic, []).append((msg, self._decode(msg, topic)))
                continue
            if self.handle(msg) is _ABORTED:
                return
            self._done(msg)
        for topic, items in grouped.items():
            decoded = [(m, e) for m, e in items if e is not None]
            if decoded and self._handle_batch(topic, decoded) is _ABORTED:
                return
            for m, _ in items:
                self._done(m)

    def _done(self, msg: Message) -> None:
        self._pending[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1

    def _maybe_die(self) -> None:
        if self._kill_after and self.stats.handled >= self._kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def _commit(
        self, partitions: set[tuple[str, int]] | None = None, consumer: Consumer | None = None
    ) -> None:
        consumer = consumer or self._consumer
        todo = {tp: off for tp, off in self._pending.items() if partitions is None or tp in partitions}
        if not todo or consumer is None:
            return
        offsets = [TopicPartition(t, p, off) for (t, p), off in todo.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
            self.stats.commits += 1
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not (isinstance(err, KafkaError) and err.code() == KafkaError._NO_OFFSET):
                # The group moved on (rebalance): the new owner re-reads these records; the
                # idempotency store, if any, skips them.
                log.warning("%s: offset commit failed, records will be redelivered: %s", self.name, exc)
        for tp in todo:
            self._pending.pop(tp, None)

    def _update_lag(self) -> None:
        assert self._consumer is not None
        try:
            assigned = self._consumer.assignment()
            positions = self._consumer.position(assigned) if assigned else []
        except KafkaException:
            return
        for tp in positions:
            try:
                _, high = self._consumer.get_watermark_offsets(tp, cached=True) or (-1, -1)
            except KafkaException:
                continue  # no fetch response yet for this partition
            if high is None or high < 0 or tp.offset < 0:
                continue
            _metrics.LAG.labels(self.name, tp.topic, str(tp.partition)).set(max(0, high - tp.offset))

    # -- one record ---------------------------------------------------------------------------

    def _decode(self, msg: _Record, topic: str) -> Event | None:
        """The record as an Event, or None after dead-lettering it (a poison pill: no retries)."""
        ts_type, ts = msg.timestamp()
        key = msg.key()
        origin = Origin(
            topic=topic,
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            key=key.decode("utf-8", "replace") if key is not None else None,
            timestamp=ts if ts_type else None,
        )
        try:
            assert self._registry is not None, "handle() needs an open app (inside run() or replay)"
            return Event.from_avro(decode(self._registry, msg.value()), origin)
        except (DecodeError, KeyError, TypeError) as exc:
            err = exc if isinstance(exc, DecodeError) else DecodeError(f"not a business event: {exc!r}")
            self._dead_letter(msg, origin, err, "decode", 0, None)
            return None

    def _retrying(
        self, call: Callable[[int], None], topic: str, what: str
    ) -> tuple[object, Exception | None, int]:
        """Run ``call(attempt)`` with retries and backoff.

        Returns ``(None | _ABORTED | _FAILED, the last error, attempts)``.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                call(attempt)
                return None, None, attempt
            except Exception as exc:
                self.stats.failed += 1
                _metrics.FAILED.labels(self.name, topic).inc()
                if attempt > self.retries:
                    log.error("%s: %s failed %d times: %s", self.name, what, attempt, exc)
                    return _FAILED, exc, attempt
                self.stats.retried += 1
                _metrics.RETRIED.labels(self.name, topic).inc()
                delay = min(self.backoff * 2 ** (attempt - 1), self.backoff_max)
                log.warning(
                    "%s: %s attempt %d failed (%s); retry in %.2fs", self.name, what, attempt, exc, delay
                )
                if self._stop.wait(delay):
                    return _ABORTED, exc, attempt

    def _count(self, topic: str, processed: int, duplicates: int) -> None:
        self.stats.processed += processed
        self.stats.duplicates += duplicates
        if processed:
            _metrics.PROCESSED.labels(self.name, topic).inc(processed)
        if duplicates:
            _metrics.DUPLICATES.labels(self.name, topic).inc(duplicates)

    def handle(self, msg: _Record, topic: str | None = None) -> object:
        """Decode, dispatch, retry and dead-letter one record; ``topic`` overrides its topic (replays).

        Returns ``_ABORTED`` when a stop request interrupted the retries (the record is then not
        committed and will be redelivered), otherwise ``None``.
        """
        topic = topic or msg.topic() or ""
        event = self._decode(msg, topic)
        if event is None:
            return None
        if topic in self._batch_handlers:
            return self._handle_batch(topic, [(msg, event)])
        fn = self._handlers.get((topic, event.name)) or self._handlers.get((topic, None))
        if fn is None:
            self.stats.unhandled += 1
            _metrics.SKIPPED.labels(self.name, topic).inc()
            return None
        ran: list[bool] = []
        origin = event.origin or Origin(topic, 0, 0)
        status, exc, attempts = self._retrying(
            lambda attempt: ran.append(self._invoke(fn, event, origin, attempt)), topic, str(origin)
        )
        if status is _FAILED:
            assert exc is not None
            self._dead_letter(msg, origin, exc, "handler", attempts, event.uuid)
        elif status is None:
            self._count(topic, int(ran[-1]), int(not ran[-1]))
        return status if status is _ABORTED else None

    def _handle_batch(self, topic: str, items: list[tuple[_Record, Event]]) -> object:
        """One call of the batch handler; if it keeps failing, each event alone (finds the bad one)."""
        fn = self._batch_handlers[topic]
        events = [e for _, e in items]
        fresh: list[int] = []
        first = events[0].origin or Origin(topic, 0, 0)
        what = f"batch of {len(events)} from {first}" if len(events) > 1 else str(first)
        status, exc, attempts = self._retrying(
            lambda attempt: fresh.append(self._invoke_batch(fn, events, first, attempt)), topic, what
        )
        if status is None:
            self._count(topic, fresh[-1], len(events) - fresh[-1])
            return None
        if status is _ABORTED:
            return _ABORTED
        if len(items) == 1:
            assert exc is not None
            self._dead_letter(items[0][0], first, exc, "handler", attempts, events[0].uuid)
            return None
        for item in items:
            if self._handle_batch(topic, [item]) is _ABORTED:
                return _ABORTED
        return None

    def _invoke_batch(self, fn: Handler, events: list[Event], origin: Origin, attempt: int) -> int:
        """Run the batch handler on the events the store has not seen; returns how many ran."""
        with_ctx = self._wants_ctx[fn]
        ran: list[int] = [0]

        def work(conn: Any, todo: list[Event]) -> None:
            ran[0] = len(todo)
            if not todo:
                return
            if with_ctx:
                fn(todo, Context(consumer=self.name, origin=origin, attempt=attempt, conn=conn))
            else:
                fn(todo)

        if self.store is None:
            work(None, events)
        else:
            self.store.run_batch(
                self.name,
                [e.uuid for e in events],
                lambda conn, new: work(conn, _first_of_each([e for e in events if e.uuid in new])),
            )
        return ran[0]

    def _invoke(self, fn: Handler, event: Event, origin: Origin, attempt: int) -> bool:
        with_ctx = self._wants_ctx[fn]

        def work(conn: Any) -> None:
            if with_ctx:
                fn(event, Context(consumer=self.name, origin=origin, attempt=attempt, conn=conn))
            else:
                fn(event)

        if self.store is None:
            work(None)
            return True
        return self.store.run_once(self.name, event.uuid, work)

    def _produce_letter(
        self, target: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> list[KafkaError]:
        """Produce one dead letter and wait for the broker: the errors (a timeout is one too)."""
        assert self._producer is not None
        failures: list[KafkaError] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(err)

        try:
            self._producer.produce(target, key=key, value=value, headers=headers, on_delivery=delivered)
        except KafkaException as exc:  # refused by the client itself (too large for the producer)
            return [exc.args[0]]
        if self._producer.flush(30):
            failures.append(KafkaError(KafkaError._MSG_TIMED_OUT))
        return failures

    def _dead_letter(
        self, msg: _Record, origin: Origin, error: BaseException, stage: str, attempts: int, uuid: str | None
    ) -> None:
        if not self.dlq or self._producer is None:
            raise HandlerFailed(
                f"{self.name}: {origin} failed ({stage}): {type(error).__name__}: {error}",
                hint="fix the handler or enable the dead-letter topic (dlq=True)",
            ) from error
        headers = _dlq.failure_headers(
            msg.headers(),
            error=error,
            stage=stage,
            topic=origin.topic,
            partition=origin.partition,
            offset=origin.offset,
            timestamp=origin.timestamp,
            consumer=self.name,
            group=self.group,
            attempts=attempts,
            event_uuid=uuid,
        )
        target = self.dlq_topic(origin.topic)
        failures = self._produce_letter(target, msg.key(), msg.value(), headers)
        if failures and failures[0].code() in _TOO_LARGE and msg.value() is not None:
            # the DLQ cannot take the record: the letter says where to read it, without its value
            size = len(msg.value() or b"")
            note = f"value of {size} bytes left out: larger than {target} takes; read it at {origin}"
            headers = [*headers, (_dlq.H + "value.omitted", note.encode())]
            failures = self._produce_letter(target, msg.key(), None, headers)
            log.warning(
                "%s: dead-lettered %s to %s without its value (%s bytes)", self.name, origin, target, size
            )
        if failures:
            raise ConsumerError(
                f"{self.name}: could not write {origin} to dead-letter topic {target}: {failures[0].str()}",
                hint="the record was not committed and will be redelivered; check the broker",
            )
        self.stats.dead_lettered += 1
        self.stats.last_dead_letter = _dlq.header_map(headers)
        _metrics.DEAD_LETTERED.labels(self.name, origin.topic).inc()
