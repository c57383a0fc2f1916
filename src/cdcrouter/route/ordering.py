"""Transaction ordering across the lanes: hand-off, commits in order on the committer thread, and
the abort-and-rewind after a failed one (see :mod:`cdcrouter.route.lanes`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from cdcrouter.errors import RouteError
from cdcrouter.route.lanes import Lane, StuckCall, TxnWork, is_fatal, retrying

log = logging.getLogger("cdcrouter.route")


class _Skipped(Exception):
    """A commit not attempted because an earlier one failed (the transaction is aborted instead)."""


class _Ordering:
    """The Router's transactions: handed off in turn, committed in order, aborted together."""

    def _hand_off(self, lane: Lane) -> None:
        """Queue the lane's commit on the committer thread and move on to the next lane. The
        committer runs commits in the order handed off, so they complete in that order.

        Per-key order: the lanes are two producers on two connections, so the next lane's record
        for a partition could reach the broker before this lane's last ones (a batch still
        lingering, or retried) and a key's events would be read out of order. This lane's records
        are therefore delivered first, on this thread; sending the offsets and ending the
        transaction still overlap the routing. If they cannot all be delivered within a call's
        limit (broker trouble), nothing more is routed until this commit has ended either way."""
        committer = self._committer
        assert committer is not None
        began = time.monotonic()
        try:
            undelivered = lane.deliver(self.opts.txn_call_timeout_s)
            if undelivered > 0:  # a deleted output topic holds its records until they time out
                self._stop_if_outputs_gone()
        except KafkaException as exc:  # fenced or fatal: its commit fails the same way and recovers
            log.warning("delivering %s: %s", lane.transactional_id, exc.args[0].str())
            undelivered = -1
        tag = self._owner_tag  # who committed them: a replica taking the partitions over reads it
        positions = [TopicPartition(t, p, o, tag) for (t, p), o in lane.work.offsets.items()]
        lane.handed_off = time.monotonic()
        lane.delivered_s = lane.handed_off - began
        self._inflight.append((lane, committer.submit(self._commit_in_order, lane, positions)))
        self._fill_at = (self._fill_at + 1) % len(self._lanes)
        if undelivered:
            if undelivered > 0:
                tid = lane.transactional_id
                log.warning("%d records of %s not delivered yet: waiting for its commit", undelivered, tid)
            while self._inflight and self._settle(wait=True):
                pass
        while self._next_lane_busy(self._fill) and self._settle(wait=True):
            pass  # one lane: nothing to fill meanwhile

    def _commit_in_order(self, lane: Lane, positions: list[TopicPartition]) -> float:
        """On the committer thread. After a failed commit nothing later may commit (its offsets
        would pass records that are not committed): those wait for the router to abort them."""
        if self._poisoned:
            raise _Skipped("an earlier transaction failed")
        try:
            return lane.commit(positions, self._group_metadata)
        except BaseException:
            self._poisoned = True
            raise

    def _next_lane_busy(self, lane: Lane | None = None) -> bool:
        """Is the lane (default: the one after the filling lane) still being committed? Lanes are
        used in turn, so it is the oldest commit in flight, if any is."""
        lane = lane or self._lanes[(self._fill_at + 1) % len(self._lanes)]
        return any(busy is lane for busy, _ in self._inflight)

    def _group_metadata(self, fresh: bool = False) -> Any:
        """The consumer's group metadata, asked once per assignment (or when ``fresh``)."""
        consumer = self._consumer
        assert consumer is not None
        if fresh or self._group_md is None:
            self._group_md = consumer.consumer_group_metadata()
        return self._group_md

    def _settle(self, wait: bool) -> bool:
        """Take the outcomes of the commits that have ended, oldest first (with ``wait``, wait for
        the oldest). False when one failed: then everything uncommitted has been aborted and the
        consumer rewound."""
        waited = not wait
        while self._inflight:
            lane, future = self._inflight[0]
            if not future.done() and waited:
                return True
            waited = True
            self._inflight.popleft()
            try:
                took = future.result()
            except StuckCall as exc:
                lane.abandon()
                self._fail(str(exc), broken=lane)
                return False
            except KafkaException as exc:
                err = exc.args[0]
                if err.txn_requires_abort():
                    self._fail(err.str(), err=err)
                    return False
                if is_fatal(err):
                    self._fail(err.str(), broken=lane, err=err)
                    return False
                raise RouteError(
                    f"transaction failed for {lane.transactional_id}: {err.str()}",
                    hint="another instance may use the same --instance-id (each needs its own), "
                    "or the broker fenced this one; restart it",
                ) from exc
            self._committed(lane, took)
        return True

    def _committed(self, lane: Lane, took: float) -> None:
        assert self._table is not None
        self._transactions += 1
        self._last_commit_at = time.monotonic()
        self.metrics.commit_took(took)
        self._fill_ms = self.opts.fill_ms((lane.delivered_s + took) * 1000)
        work = lane.work
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "committed %d on %s: filled %.1f ms, queued %.1f ms, commit %.1f ms (offsets %.1f), "
                "delivered %.1f ms, %d filters",
                work.consumed,
                lane.transactional_id,
                (lane.handed_off - lane.started) * 1000,
                (lane.commit_began - lane.handed_off) * 1000,
                took * 1000,
                lane.offsets_s * 1000,
                lane.delivered_s * 1000,
                len(work.matched),
            )
        self.metrics.commit(work.consumed, work.dead_lettered, work.matched, self._table.labels, work.e2e)
        lane.work = TxnWork()
        self._careful = False
        self._failures_in_row = 0
        if self._poison:  # dead-lettered and committed: forget them
            for source in [s for s in self._poison if work.offsets.get(s[:2], -1) > s[2]]:
                del self._poison[source]

    def _drain(self) -> bool:
        """Commit everything routed so far (before stopping or giving partitions away)."""
        if self._fill.in_txn:
            self._hand_off(self._fill)
        while self._inflight:
            if not self._settle(wait=True):
                return False
        return True

    def _fail(
        self, why: str, broken: Lane | None = None, rewind: bool = True, err: KafkaError | None = None
    ) -> None:
        """Abort everything not committed and go back to the committed offsets, so it is redone
        once. Commits still in flight end first: which of them committed decides where that is.
        The redo watches every record's delivery (see :meth:`_watch`); a failure no redo can fix
        stops the router instead (:meth:`_judge`)."""
        log.warning("aborting uncommitted transactions: %s", why)
        replace = {id(broken)} if broken is not None else set()
        while self._inflight:
            lane, future = self._inflight.popleft()
            try:
                self._committed(lane, future.result())
            except StuckCall:
                lane.abandon()
                replace.add(id(lane))
            except _Skipped:
                pass
            except KafkaException as exc:
                if is_fatal(exc.args[0]):
                    replace.add(id(lane))
        self._poisoned = False
        if rewind:
            for lane in self._lanes:  # their delivery reports say which records were refused
                if id(lane) not in replace:
                    lane.serve_reports()
            self._judge(err)
        for lane in self._lanes:
            if id(lane) not in replace and lane.in_txn:
                try:
                    lane.abort()
                except StuckCall:
                    lane.abandon()
                    replace.add(id(lane))
                except KafkaException as exc:
                    # fatal, or still failing after a call's limit: a new producer with this id
                    # aborts the transaction on the broker when it registers (init_transactions)
                    if not is_fatal(exc.args[0]):
                        log.warning("could not abort on %s: %s", lane.transactional_id, exc.args[0].str())
                    replace.add(id(lane))
            lane.work = TxnWork()
            # aborted, or its producer is replaced: either way nothing is open on it any more (a
            # fenced lane left "in a transaction" at shutdown was committed by the revoke after it)
            lane.in_txn = False
        broken_lanes = [lane for lane in self._lanes if id(lane) in replace]
        if broken_lanes and why != "shutting down":
            self._replace(broken_lanes, why)
        if self._resize:  # batches must fit the smallest output topic again: new producers, sized
            self._resize = False
            conf = self._sizing()
            for lane in self._lanes:
                lane.reconfigure(conf)
                if lane not in broken_lanes:
                    lane.replace()
        self.metrics.aborted()
        if rewind:
            self._careful = True
            self._rewind()

    def _rewind(self) -> None:
        """After an abort: continue from the committed offsets, so aborted work is redone once."""
        consumer = self._consumer
        assert consumer is not None
        assignment = consumer.assignment()
        if not assignment:
            return
        try:
            committed: list[TopicPartition] = []
            retrying(
                lambda t: committed.extend(consumer.committed(assignment, timeout=t)),
                "reading offsets",
                self.opts.retry_s,
                self.opts.txn_call_timeout_s,
            )
            for tp in committed:
                offset = (
                    tp.offset
                    if tp.offset >= 0
                    else self._origins.get((tp.topic, tp.partition), OFFSET_BEGINNING)
                )
                try:
                    consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
                except KafkaException as exc:  # revoked meanwhile: its next owner starts from committed
                    log.warning("rewind %s[%d]: %s", tp.topic, tp.partition, exc.args[0].str())
        except StuckCall as exc:
            raise RouteError(
                f"could not rewind to the committed offsets after an abort: {exc}",
                hint="restart the router; it resumes from the committed offsets",
            ) from exc
        except KafkaException as exc:
            raise RouteError(
                f"could not rewind to the committed offsets after an abort: {exc.args[0].str()}",
                hint="restart the router; it resumes from the committed offsets",
            ) from exc
