"""Fused mode, capture's side: every raw record is routed into the same Kafka transaction.

:class:`FusedSink` is the capture's :class:`~cdcrouter.capture.sink.TransactionalSink` whose
``produce`` also hands each raw record to :class:`cdcrouter.route.fused.FusedRoutes`, so the raw
record, its filtered records, any router dead letter and the capture position commit together:
one transaction between a PostgreSQL COMMIT and a readable filtered record, instead of capture's
and then the router's. Every produce path of the engine (the streamed hot path, the generic path,
snapshot rows, the replay after a failure) goes through ``produce``, so none can skip routing.

Failures keep the capture's rules (nothing acknowledged to PostgreSQL before Kafka committed), plus
the router's for filtered records: a record no topic would take is dead-lettered to
``<raw>.router.dlq``; one the broker refuses while running makes capture abort and replay from the
committed position, with the refused record then dead-lettered (or the new topic limit applied).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from cdcrouter.capture.kafka_limits import SIZE_ERRORS, permanent_error
from cdcrouter.capture.pipeline import RawTopic
from cdcrouter.capture.sink import _PURGED, KafkaSinkError, Offsets, TransactionalSink
from cdcrouter.config.connections import Connections
from cdcrouter.errors import CaptureError
from cdcrouter.route.fused import FusedRoutes
from cdcrouter.route.limits import RECORD_ERRORS
from cdcrouter.transactions import DEFAULT_CAPTURE_TIMEOUT_MS

__all__ = ["FusedSink"]

log = logging.getLogger("cdcrouter.capture")


class FusedSink(TransactionalSink):
    """A capture sink that routes each raw record in its own transaction (see module doc)."""

    def __init__(
        self,
        conns: Connections,
        raw: RawTopic,
        slot: str,
        routes: FusedRoutes,
        *,
        size_cap: int | None = None,
        transaction_timeout_ms: int = DEFAULT_CAPTURE_TIMEOUT_MS,
    ) -> None:
        self.routes = routes
        self._outputs = routes.outputs
        # filtered records the broker refused: (topic, value, error), judged in _rejected
        self.refused: list[tuple[str, bytes, KafkaError]] = []
        # lanes: a transaction never waits for the commit markers of the ones before (sink.py)
        super().__init__(
            conns, raw, slot, size_cap=size_cap, transaction_timeout_ms=transaction_timeout_ms, lanes=3
        )
        raw_name = raw.name
        route = routes.route

        def produce(topic: str, value: Any, key: Any = None, **kw: Any) -> None:
            producer = self.producer  # the open transaction's lane
            producer.produce(topic, value, key, **kw)  # raises before anything is routed: caller retries
            if topic == raw_name:
                try:
                    route(value, key, producer)
                except KafkaException as exc:  # the raw record is in: never let the caller redo it
                    raise self._failure(exc.args[0], "cannot produce a filtered record") from exc

        self.produce = produce  # type: ignore[method-assign]
        self._warm_metadata()

    def _warm_metadata(self) -> None:
        """Learn every topic's partitions and leaders now, before the first change: a record for a
        topic not in the producer's metadata cache waits for a metadata request first."""
        raw = self.raw
        for producer in self.lanes:
            for topic in sorted({raw.name, raw.offsets_topic, raw.dlq_topic, *self._outputs}):
                try:
                    producer.list_topics(topic, timeout=10)
                except KafkaException as exc:  # the first produce asks again; nothing is lost by going on
                    log.warning("metadata for %s: %s", topic, exc.args[0].str())

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is None or err.code() in _PURGED:
            return
        if msg.topic() in self._outputs:
            self.refused.append((msg.topic(), msg.value() or b"", err))
        super()._on_delivery(err, msg)

    def begin(self) -> None:
        if not self.in_transaction:
            self.routes.begin()  # a reloaded filters.yaml applies from this transaction on
            self._outputs = self.routes.outputs
        super().begin()

    def commit(self, offsets: Offsets) -> None:
        super().commit(offsets)
        self.routes.committed()

    def _rejected(self) -> CaptureError:
        """Records refused on a filtered topic or the router's DLQ: abort, and make the replay
        from the committed position write what it can (the router's rules); else capture's own."""
        refused, self.refused = self.refused, []
        ours = [f for f in self.failed if f[0] in self._outputs]
        if not ours:
            return super()._rejected()
        self.failed = [f for f in self.failed if f[0] not in self._outputs]
        if self.failed:  # capture's own topics first: their rules decide
            return super()._rejected()
        self.in_transaction = False
        with contextlib.suppress(KafkaException):
            self.producer.abort_transaction(30)
        dlq = self.routes.opts.dlq
        for topic, _size, err in ours:
            code = err.code()
            if topic == dlq:
                return permanent_error(err, f"{dlq} refused a dead letter") or CaptureError(
                    f"{dlq} refused a dead letter: {err.str()}",
                    hint=f"check {dlq}'s configuration and capture's rights to write it",
                )
            if code not in RECORD_ERRORS:
                return permanent_error(err, f"Kafka refused a record for {topic}") or KafkaSinkError(
                    f"Kafka could not deliver a record to {topic}: {err.str()}"
                )
        if any(e.code() in SIZE_ERRORS for _t, _s, e in ours) and self.routes.refresh_limits():
            what = "its new max.message.bytes now applies"
        else:
            for topic, value, err in refused:
                self.routes.refused(topic, value, f"{err.name()}: {err.str()} (topic {topic})")
            what = "the refused records are dead-lettered to " + dlq
        return KafkaSinkError(
            f"the broker refused {len(ours)} filtered record(s) for "
            f"{', '.join(sorted({t for t, _s, _e in ours}))}; replaying: {what}",
            hint="nothing to do; see the router's dead-letter topic",
        )
