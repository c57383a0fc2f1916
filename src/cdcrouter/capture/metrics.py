"""Prometheus metrics of one capture engine, read when scraped.

The counters are the engine's own :class:`~cdcrouter.capture.engine.CaptureStats`, collected at
scrape time, so the hot loop pays nothing for them; the Kafka commit latency is a histogram
observed once per commit; the WAL the slot retains is read from ``pg_replication_slots`` at scrape
time, with the slot's ``wal_status``. Each engine has its own registry (several engines in one
process never collide); ``serve(port, addr)`` exposes it with ``/healthz`` and ``/readyz``
(observe/endpoint.py), on 127.0.0.1 unless told otherwise. ``health`` is the engine's readiness:
streaming from the slot, its loop turning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from cdcrouter.observe.endpoint import Heartbeat

if TYPE_CHECKING:
    from cdcrouter.capture.engine import CaptureStats
    from cdcrouter.config.connections import PostgresSettings

__all__ = ["CaptureMetrics"]

log = logging.getLogger("cdcrouter.capture")

_SLOT_SQL = """
SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, wal_status
FROM pg_replication_slots WHERE slot_name = %s
"""
WAL_STATUSES = ("reserved", "extended", "unreserved", "lost")


class _StatsCollector(Collector):
    def __init__(
        self, stats: Callable[[], CaptureStats], slot: Callable[[], tuple[int | None, str | None] | None]
    ) -> None:
        self.stats = stats
        self.slot = slot

    def collect(self) -> Iterator[Any]:
        s = self.stats()
        counters = (
            ("changes", "Row changes captured (rate() of it is changes/s)", s.events),
            ("events", "Business events committed to Kafka, snapshot rows included", s.last.events_total),
            ("transactions", "PostgreSQL transactions captured", s.transactions),
            ("kafka_commits", "Kafka transactions committed", s.kafka_commits),
            (
                "skipped_transactions",
                "PostgreSQL transactions skipped as already in Kafka",
                s.skipped_transactions,
            ),
            ("dead_letters", "Changes sent to the capture dead-letter topic", s.dead_letters),
            (
                "reconnects",
                "Replication connections or Kafka producers replaced after a failure",
                s.reconnects,
            ),
            ("snapshot_rows", "Rows sent by snapshots", s.snapshot_events),
            (
                "unknown_relation_changes",
                "Changes of relations the pipeline does not capture, skipped (and logged once each)",
                s.unknown_relation_changes,
            ),
        )
        for name, doc, value in counters:
            yield CounterMetricFamily(f"cdcrouter_capture_{name}", doc, value=value)
        yield GaugeMetricFamily(
            "cdcrouter_capture_committed_lsn",
            "WAL position (end LSN) of the last PostgreSQL transaction committed to Kafka",
            value=s.last.end_lsn,
        )
        slot = self.slot()
        if slot is None:
            return
        retained, wal_status = slot
        if retained is not None:
            yield GaugeMetricFamily(
                "cdcrouter_capture_slot_retained_wal_bytes",
                "WAL the replication slot keeps on the PostgreSQL server (from pg_replication_slots)",
                value=retained,
            )
        status = GaugeMetricFamily(
            "cdcrouter_capture_slot_wal_status",
            "1 for the slot's wal_status in pg_replication_slots (reserved is safe), 0 for the others",
            labels=["wal_status"],
        )
        current = wal_status or "unknown"
        for name in dict.fromkeys((*WAL_STATUSES, current)):  # every state, so an alert sees 1 -> 0
            status.add_metric([name], 1 if name == current else 0)
        yield status


class CaptureMetrics:
    """Metrics of one engine. ``commit_took`` per Kafka commit; ``snapshot_*`` for the snapshot."""

    def __init__(self, stats: Callable[[], CaptureStats], pg: PostgresSettings, slot: str) -> None:
        self.registry = CollectorRegistry()
        self._pg = pg
        self._slot = slot
        self.registry.register(_StatsCollector(stats, self._slot_state))
        self._commit_s = Histogram(
            "cdcrouter_capture_kafka_commit_seconds",
            "Time to commit one Kafka transaction (position included): the floor of capture latency",
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 30.0),
            registry=self.registry,
        )
        self._snapshot_rows = Gauge(
            "cdcrouter_capture_snapshot_table_rows",
            "Rows of a table sent by the running snapshot so far",
            ["table"],
            registry=self.registry,
        )
        self._snapshot_total = Gauge(
            "cdcrouter_capture_snapshot_table_rows_expected",
            "Rows the snapshot expects to send for a table (an estimate, e.g. pg_class.reltuples)",
            ["table"],
            registry=self.registry,
        )
        self._snapshot_done = Gauge(
            "cdcrouter_capture_snapshot_table_done",
            "1 once the snapshot of a table is committed to Kafka",
            ["table"],
            registry=self.registry,
        )
        self.server: Any = None
        self.health = Heartbeat(reason="not streaming yet", progress=lambda: stats().events)

    def commit_took(self, seconds: float) -> None:
        self._commit_s.observe(seconds)

    def snapshot_progress(
        self, table: str, rows: int, expected: int | None = None, done: bool = False
    ) -> None:
        """For the snapshot: rows of ``table`` sent (and committed) so far."""
        self._snapshot_rows.labels(table).set(rows)
        if expected is not None:
            self._snapshot_total.labels(table).set(expected)
        self._snapshot_done.labels(table).set(1 if done else 0)

    def _slot_state(self) -> tuple[int | None, str | None] | None:
        """(retained WAL bytes, wal_status) of the slot; ``None`` when it cannot be read (or is gone)."""
        from cdcrouter.capture import source

        try:
            conn = source.connect_sql(self._pg)
        except Exception as exc:  # a scrape must not fail because PostgreSQL is away
            log.debug("metrics: cannot read the slot's retained WAL: %s", exc)
            return None
        try:
            row = conn.execute(_SLOT_SQL, (self._slot,)).fetchone()
            if row is None:
                return None
            return (None if row[0] is None else int(row[0])), row[1]
        except Exception as exc:
            log.debug("metrics: cannot read the slot's retained WAL: %s", exc)
            return None
        finally:
            conn.close()

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Serve ``/metrics``, ``/healthz``, ``/readyz`` on ``addr:port`` from a daemon thread
        (port 0: any free port)."""
        from cdcrouter.observe.endpoint import MetricsServer

        self.server = MetricsServer(port, addr, self.registry, [("capture", self.health)])

    @property
    def port(self) -> int | None:
        return None if self.server is None else self.server.port

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
