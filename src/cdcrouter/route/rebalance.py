"""Rebalances and reloads: what the Router does when partitions come and go, and when filters.yaml
changes (only between transactions).
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from cdcrouter.errors import CdcrouterError
from cdcrouter.route import takeover
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
        live = takeover.live_instances(self._admin_client(), self.opts.group_id, self.opts.txn_call_timeout_s)
        # before reading the committed offsets: a dead instance's pending offsets hold that read
        if live is not None:
            self._fence_departed([o for i, o in self._peers.items() if i not in live], "left the group")
            admin, group, limit = self._admin_client(), self.opts.group_id, self.opts.txn_call_timeout_s
            owners = takeover.previous_owners(admin, group, partitions, limit) if partitions else set()
            self._fence_departed(
                [o for o in owners if o.instance_id not in live], "committed these partitions last"
            )
            self._fenced -= live  # one seen alive again may need fencing again later
            self._peers = {i: self._peers.get(i, takeover.Owner(i, self.opts.lanes)) for i in live}
            self._peers.pop(self.opts.instance_id, None)
        if partitions:
            self._start_positions(consumer, partitions)

    def _fence_departed(self, owners: list[takeover.Owner], why: str) -> None:
        """Abort the open transactions of instances no longer in the group (module
        :mod:`cdcrouter.route.takeover`), once each."""
        for owner in owners:
            if owner.instance_id == self.opts.instance_id or owner.instance_id in self._fenced:
                continue
            self._fenced.add(owner.instance_id)
            tids = owner.transactional_ids(self.opts.group_id)
            conf = {
                **self.conns.kafka.producer_conf(),
                "transaction.timeout.ms": self.opts.transaction_timeout_ms,
                **self.opts.producer_conf,
            }
            took = takeover.fence(conf, tids, self.opts.txn_call_timeout_s)
            log.info(
                "instance %s is no longer in group %s (it %s): fenced %s in %.0f ms, its open "
                "transaction is aborted",
                owner.instance_id, self.opts.group_id, why, ", ".join(tids), took * 1000,
            )  # fmt: skip

    def _start_positions(
        self, consumer: Any, partitions: list[TopicPartition]
    ) -> list[TopicPartition] | None:
        """Resolve ``auto.offset.reset`` for partitions without committed offsets ourselves, and
        assign them there, so :meth:`_rewind` knows where their routing began. Before, an abort
        with nothing committed yet rewound to the beginning of the partition whatever the setting.
        Returns the committed offsets (with the metadata naming who committed them), None if unread."""
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
            return None
        consumer.assign(committed)
        return committed

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
