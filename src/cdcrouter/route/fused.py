"""Fused mode: the router's filters applied inside the capture's own Kafka transaction.

``cdcrouter capture run --route filters.yaml`` writes each raw record, its filtered records and the
capture position in ONE transaction, so a change crosses one commit instead of two (capture's,
then the router's). The raw topic is still written, and stays the source for Flink and replays.

Nothing here decides on its own what a filtered record is. The routing table (filter -> topic,
schema id, size limit) comes from :mod:`~cdcrouter.route.setup`, the decoder and the filtered
schemas derived from evolved writers from :mod:`~cdcrouter.route.codec`, the framing from
:mod:`~cdcrouter.route.wire`, the dead letters (``<raw>.router.dlq``, same headers) from
:mod:`~cdcrouter.route.refusals` and the live reload from :mod:`~cdcrouter.route.rebalance`: a
fused filtered record is byte for byte what the standalone router writes for the same raw record
(``filteredAt`` aside, a clock). The capture side (which producer, which transaction) is
:mod:`cdcrouter.capture.fused`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException

from cdcrouter.config.connections import Connections
from cdcrouter.errors import CdcrouterError, RouteError
from cdcrouter.route.codec import DecodeError, FilteredSchemas, RawDecoder
from cdcrouter.route.filterset import compile_filters_file
from cdcrouter.route.limits import RECORD_ERRORS, topic_limits
from cdcrouter.route.metrics import RouterMetrics
from cdcrouter.route.rebalance import _Rebalance
from cdcrouter.route.refusals import _Refusals, _rejection, _too_large
from cdcrouter.route.setup import _Setup, _Table
from cdcrouter.schemas.registry import RegistryClient

__all__ = ["FusedRoutes", "event_uuid"]

log = logging.getLogger("cdcrouter.route.fused")

Produce = Callable[..., Any]


@dataclass
class _Work:
    """What the open transaction routed; folded into the totals only when it commits."""

    dead_lettered: int = 0


class _Into:
    """The slice of a router lane :meth:`_Refusals._dead_letter` writes through."""

    __slots__ = ("producer", "work")

    def __init__(self, producer: Any, work: _Work) -> None:
        self.producer = producer
        self.work = work


class _Source:
    """The raw record a dead letter is about, shaped like a consumed message. In fused mode the
    raw record is in the same open transaction, so its partition and offset are not known yet:
    both headers say -1, and the dead letter carries the raw key and value (the event's uuid)."""

    __slots__ = ("_key", "_topic", "_value")

    def __init__(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._topic, self._key, self._value = topic, key, value

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return -1

    def offset(self) -> int:
        return -1

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return [("cdcrouter.source.fused", b"written in the capture's transaction")]


def event_uuid(framed: bytes, start: int = 5) -> bytes | None:
    """``eventHeader.uuid`` from a framed raw or filtered value: the record's first field (an Avro
    string right after the 5-byte header), read without decoding the rest."""
    shift = length = 0
    i = start
    try:
        while True:
            b = framed[i]
            length |= (b & 0x7F) << shift
            i += 1
            if not b & 0x80:
                break
            shift += 7
    except IndexError:
        return None
    length = (length >> 1) ^ -(length & 1)
    if length < 0 or i + length > len(framed):
        return None
    return bytes(framed[i : i + length])


class FusedRoutes(_Setup, _Refusals, _Rebalance):
    """The router's routing of one raw record, into a producer and transaction owned by capture.

    Example::

        routes = FusedRoutes("filters.yaml", conns, "raw-business-events")
        routes.start()                       # topics and schemas checked, like `cdcrouter run`
        routes.route(value, key, producer)   # after producing the raw record, same transaction
    """

    def __init__(self, filters_path: str | Path, connections: Connections, raw_topic: str) -> None:
        from cdcrouter.route.engine import RouterOptions

        self.path = Path(filters_path)
        self.conns = connections
        self.opts = RouterOptions(raw_topic=raw_topic, instance_id="fused")
        self.metrics = RouterMetrics()  # reload outcomes (the shared _maybe_reload counts them)
        self._registry = RegistryClient(connections.registry.to_client_conf())
        self._decoder = RawDecoder(self._registry.schema_by_id)
        self._evolved = FilteredSchemas(self._registry)
        self._schema_ids: dict[str, int] = {}
        self._limits: dict[str, int] = {}
        self._admin: Any = None
        self._table: _Table | None = None
        self._checked_topics = False
        self._careful = False  # the router's watched redo: capture's delivery reports do that here
        self._dlq_error: str | None = None
        # (event uuid, topic) -> why the broker refused that filtered record for good: the replay
        # after the abort dead-letters it instead of producing it again
        self.poison: dict[tuple[bytes, str], str] = {}
        self._work = _Work()
        self._matched: Counter[str] = Counter()  # this transaction's
        self.matched: Counter[str] = Counter()  # committed, per filter id
        self.dead_lettered = 0  # committed
        self._next_reload = 0.0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Compile the filters and check every output topic and filtered schema, as the router's
        start does (same errors and hints: ``topics apply``, ``schemas apply``)."""
        filters = compile_filters_file(self.path)
        self._table = self._prepare_table(filters, self.opts.topic_wait_s)
        self._checked_topics = True
        self._limits.update(topic_limits(self._admin_client(), [self.opts.raw_topic]))
        log.info("fused routing with %d filter(s) from %s", len(self._table.routes), self.path)

    @property
    def outputs(self) -> set[str]:
        """Every topic a fused transaction may write besides capture's own."""
        assert self._table is not None
        return {*self._table.filters.topics, self.opts.dlq}

    @property
    def table(self) -> _Table:
        assert self._table is not None
        return self._table

    def begin(self) -> None:
        """A Kafka transaction begins: reload filters.yaml if it changed (so each transaction is
        routed under exactly one filter set), and forget what an aborted one routed."""
        self._work = _Work()
        self._matched = Counter()
        if self.opts.reload:
            now = time.monotonic()
            if now >= self._next_reload:
                self._next_reload = now + self.opts.reload_check_ms / 1000
                self._maybe_reload()

    def committed(self) -> None:
        """The transaction committed: its routing counts."""
        self.matched.update(self._matched)
        self.dead_lettered += self._work.dead_lettered
        self._matched = Counter()
        self._work = _Work()

    def refresh_limits(self) -> bool:
        """After the broker refused a filtered record as too large: read the limits again."""
        return self._refresh_limits()

    def close(self) -> None:
        self._registry.close()

    # ------------------------------------------------------------------ per record

    def route(self, value: bytes, key: bytes | None, producer: Any) -> None:
        """Produce ``value``'s filtered records (and any dead letter) into ``producer``'s open
        transaction. Raises KafkaException for a produce error that is not the record's fault."""
        table = self._table
        assert table is not None
        routes = table.routes
        try:
            event, body, writer = self._decoder.decode(value)
            ids = table.filters.match(event)
            heads = (
                {fid: routes[fid].header for fid in ids}
                if writer.passthrough
                else {fid: self._evolved.header(writer, routes[fid].topic) for fid in ids}
            )
        except DecodeError as exc:
            self._dead_letter(_Source(self.opts.raw_topic, key, value), str(exc), _Into(producer, self._work))
            return
        except CdcrouterError:
            raise
        except Exception as exc:  # an evaluator failure must not stop capture or drop the record
            why = f"filter evaluation failed: {exc!r}"
            self._dead_letter(_Source(self.opts.raw_topic, key, value), why, _Into(producer, self._work))
            return
        if not ids:
            return
        now_ms = time.time_ns() // 1_000_000
        entities = event["eventBody"]["entities"]
        out_key = entities[0]["entityId"].encode() if entities else key
        uuid = event["eventHeader"]["uuid"].encode() if self.poison else b""
        rejected: dict[str, str] | None = None
        produce = producer.produce
        for fid in ids:
            route = routes[fid]
            topic = route.topic
            out = b"".join((heads[fid], body, route.meta.encode(now_ms)))
            size = len(out) + (len(out_key) if out_key else 0)
            refused = self.poison.get((uuid, topic)) if uuid else None
            if size > route.max_bytes or refused is not None:
                rejected = rejected or {}
                rejected[fid] = refused or _too_large(topic, size, route.max_bytes)
                continue
            while True:
                try:
                    produce(topic, out, out_key)
                    break
                except BufferError:
                    producer.poll(0.05)
                except KafkaException as exc:
                    if exc.args[0].code() not in RECORD_ERRORS:
                        raise
                    rejected = rejected or {}
                    rejected[fid] = f"{exc.args[0].name()}: {exc.args[0].str()} (topic {topic})"
                    break
            if rejected is None or fid not in rejected:
                self._matched[fid] += 1
        if rejected:
            self._dead_letter(
                _Source(self.opts.raw_topic, key, value),
                _rejection(rejected),
                _Into(producer, self._work),
                sorted(rejected),
            )

    def refused(self, topic: str, filtered_value: bytes, why: str) -> None:
        """The broker refused a filtered record for good (not its size): the replay dead-letters it."""
        uuid = event_uuid(filtered_value)
        if uuid is None:
            raise RouteError(f"the broker refused a record for {topic}: {why}")
        self.poison[(uuid, topic)] = why
