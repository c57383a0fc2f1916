"""Rebalances and reloads: what the Router does when partitions come and go, and when filters.yaml
changes (only between transactions).
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from cdcrouter.errors import CdcrouterError
from cdcrouter.route.filterset import CompiledFilters, compile_filters_file, file_stamp
from cdcrouter.route.setup import _Table

log = logging.getLogger("cdcrouter.route")


class _Rebalance:
    """The Router's group callbacks and live reload."""

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


def _tps(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
