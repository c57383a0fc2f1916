"""Records no retry can write: dead letters, the watched redo after a failure, and the judgement
that stops the router instead of aborting and redoing for ever (see :mod:`cdcrouter.route.limits`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from cdcrouter.errors import RouteError
from cdcrouter.route.lanes import Lane
from cdcrouter.route.limits import (
    AUTH_ERRORS,
    BATCH_OVERHEAD,
    RECORD_ERRORS,
    UNKNOWN_TOPIC_ERRORS,
    producer_sizing,
    record_size,
    topic_limits,
)
from cdcrouter.route.setup import _Table

log = logging.getLogger("cdcrouter.route")

ERROR_HEADER = "cdcrouter.error"
FILTERS_HEADER = "cdcrouter.filters"  # the filters a record could not be written for
OMITTED_HEADER = "cdcrouter.value.omitted"  # why a dead letter carries no value
# Failures in a row, none of them followed by a commit or explained by a record it could dead-letter:
# the router stops instead of aborting and redoing the same work for ever.
MAX_FAILURES_IN_ROW = 10


class _Refusals:
    """The Router's handling of records and topics the broker refuses."""

    def _dead_letter(self, msg: Any, error: str, lane: Lane, filter_ids: list[str] | None = None) -> None:
        """Write the raw record to the DLQ with why, in the lane's transaction. One that the DLQ
        itself would refuse keeps the headers (error and source position) without the value."""
        assert lane.producer is not None
        ours = [
            (ERROR_HEADER, error.encode()),
            ("cdcrouter.source.topic", msg.topic().encode()),
            ("cdcrouter.source.partition", str(msg.partition()).encode()),
            ("cdcrouter.source.offset", str(msg.offset()).encode()),
        ]
        if filter_ids:
            ours.append((FILTERS_HEADER, ",".join(filter_ids).encode()))
        value, key = msg.value(), msg.key()
        headers = [*(msg.headers() or []), *ours]
        dlq_max = self._limits.get(self.opts.dlq, 0) - BATCH_OVERHEAD
        if dlq_max > 0 and record_size(key, value, headers) > dlq_max:
            size = len(value or b"")
            ours.append(
                (
                    OMITTED_HEADER,
                    f"value of {size} bytes left out: {self.opts.dlq} accepts {dlq_max + BATCH_OVERHEAD} "
                    "(max.message.bytes); read it from the source topic, partition and offset".encode(),
                )
            )
            value, headers = None, ours
            if record_size(key, value, headers) > dlq_max:
                key = None
        try:
            if self._careful:
                lane.producer.produce(self.opts.dlq, value, key, headers=headers, on_delivery=self._watch_dlq)
            else:
                lane.producer.produce(self.opts.dlq, value, key, headers=headers)
        except KafkaException as exc:
            raise RouteError(
                f"cannot dead-letter {msg.topic()}[{msg.partition()}]@{msg.offset()} to {self.opts.dlq}: "
                f"{exc.args[0].str()} (it was dead-lettered because: {error})",
                hint=f"check {self.opts.dlq} (cdcrouter topics apply) and the router's rights to write it",
            ) from exc
        lane.work.dead_lettered += 1
        log.warning(
            "dead-lettered %s[%d]@%d to %s: %s",
            msg.topic(),
            msg.partition(),
            msg.offset(),
            self.opts.dlq,
            error,
        )

    def _watch(self, msg: Any, fid: str, topic: str) -> Any:
        """A delivery callback for one output record while redoing after a failure: the broker's
        refusal of this record is remembered, so the next redo dead-letters it for this filter."""
        source = (msg.topic(), msg.partition(), msg.offset())

        def delivered(err: KafkaError | None, _out: Any) -> None:
            if err is None:
                return
            code = err.code()  # may raise SystemError: see kafka_error_of
            if code in RECORD_ERRORS:
                too_large = code in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE)
                self._refusals.append(
                    (source, fid, topic, f"{err.name()}: {err.str()} (topic {topic})", too_large)
                )
            elif code in UNKNOWN_TOPIC_ERRORS or code in AUTH_ERRORS:
                self._refused_topics[topic] = err

        return delivered

    def _watch_dlq(self, err: KafkaError | None, _out: Any) -> None:
        if err is None:
            return
        code = err.code()  # may raise SystemError: see kafka_error_of
        if code in RECORD_ERRORS or code in AUTH_ERRORS:
            self._dlq_error = err.str()

    def _judge(self, err: KafkaError | None) -> None:
        """Before aborting for ``err``: stop with a clear error when redoing cannot help, so the
        router never aborts and redoes the same work for ever."""
        code = err.code() if err is not None else None
        if self._dlq_error is not None:
            raise RouteError(
                f"{self.opts.dlq} refused a dead letter: {self._dlq_error}",
                hint=f"check {self.opts.dlq}'s configuration and the router's rights to write it",
            )
        denied = [t for t, e in self._refused_topics.items() if e.code() in AUTH_ERRORS]
        if code in AUTH_ERRORS or denied:
            raise RouteError(
                f"not authorized to write {', '.join(denied) or 'an output topic'}: "
                f"{err.str() if err is not None else self._refused_topics[denied[0]].str()}",
                hint="grant the router's principal Write on the filtered topics and the DLQ, "
                "and its transactional ids and group; it resumes from the committed offsets",
            )
        unknown = [t for t, e in self._refused_topics.items() if e.code() in UNKNOWN_TOPIC_ERRORS]
        self._refused_topics.clear()
        if code in UNKNOWN_TOPIC_ERRORS or unknown:
            self._stop_if_outputs_gone()  # else the metadata has not reached every broker yet
            log.info("topic metadata not settled yet (%s): redoing", ", ".join(unknown) or err.str())
        self._failures_in_row += 1
        if self._explained(err):
            self._failures_in_row = 0  # the redo dead-letters what was refused
        elif self._failures_in_row > MAX_FAILURES_IN_ROW:
            raise RouteError(
                f"routing keeps failing ({self._failures_in_row} aborts in a row, nothing committed "
                f"between them): {err.str() if err is not None else 'see the warnings above'}",
                hint="fix the cause and restart; the router resumes from the committed offsets",
            )

    def _stop_if_outputs_gone(self) -> None:
        """Stop, naming the topic and its filters, when an output topic was deleted while routing.

        Why stop rather than pause that one route: the raw offsets are committed per partition for
        all filters at once. Pausing one route means holding back every route's offsets (every
        filter stalls anyway) or passing records that route never got (lost to its consumer). A
        stop says so at once; the restarted router refuses to start until the topic is back or the
        filter is gone, then resumes from the committed offsets: nothing lost, nothing doubled."""
        table = self._table
        if table is None or not self._checked_topics:
            return
        gone = self._missing_topics([*table.filters.topics, self.opts.dlq])
        if gone:  # one more look: a metadata answer from a broker that is just starting up
            time.sleep(1.0)
            gone = self._missing_topics(gone)
        if not gone:
            return
        owners = {t: sorted(fid for fid, r in table.routes.items() if r.topic == t) for t in gone}
        what = "; ".join(
            f"{t} (the router's dead-letter topic)"
            if t == self.opts.dlq
            else f"{t} (filter {', '.join(owners[t])})"
            for t in gone
        )
        raise RouteError(
            f"output topic deleted while routing: {what}. Every filter is stopped with it: the raw "
            "offsets are shared, so no filter can go on without losing that one's events",
            hint="recreate it (cdcrouter topics apply), or remove or disable the filter in "
            "filters.yaml; then restart: routing resumes from the committed offsets",
        )

    def _explained(self, err: KafkaError | None) -> bool:
        """Did the broker refuse records for good? Then the redo does not write them again: a topic
        whose ``max.message.bytes`` changed gets its new limit (the size check before producing
        then dead-letters what no longer fits); any other refused record is dead-lettered for the
        filter it was refused for."""
        refusals, self._refusals = self._refusals, []
        sized = err is not None and err.code() in (
            KafkaError.MSG_SIZE_TOO_LARGE,
            KafkaError.RECORD_LIST_TOO_LARGE,
        )
        if (sized or any(r[4] for r in refusals)) and self._refresh_limits():
            refusals = [r for r in refusals if not r[4]]
            if not refusals:
                return True
        for source, fid, _topic, why, _sized in refusals:
            self._poison.setdefault(source, {})[fid] = why
        return bool(refusals)

    def _refresh_limits(self) -> bool:
        """Read the output topics' limits again; True if one changed (the routes then use it)."""
        table = self._table
        if table is None:
            return False
        outputs = [*table.filters.topics, self.opts.dlq]
        fresh = topic_limits(self._admin_client(), outputs)
        if all(self._limits.get(t) == n for t, n in fresh.items()):
            return False
        log.warning(
            "output topic limits changed: %s", {t: n for t, n in fresh.items() if self._limits.get(t) != n}
        )
        batch = producer_sizing({t: n for t, n in self._limits.items() if t in outputs})["batch.size"]
        self._limits.update(fresh)
        self._resize = min(fresh.values()) - BATCH_OVERHEAD < batch
        self._table = _Table(
            table.filters,
            {
                fid: replace(r, max_bytes=self._limits[r.topic] - BATCH_OVERHEAD)
                for fid, r in table.routes.items()
            },
        )
        return True


def _too_large(topic: str, size: int, max_bytes: int) -> str:
    return (
        f"record of {size} bytes is larger than {topic} accepts "
        f"({max_bytes + BATCH_OVERHEAD} max.message.bytes, less {BATCH_OVERHEAD} for the batch)"
    )


def _rejection(rejected: dict[str, str]) -> str:
    """One dead letter's reason for every filter that could not get the record."""
    return "; ".join(f"filter {fid}: {why}" for fid, why in sorted(rejected.items()))
