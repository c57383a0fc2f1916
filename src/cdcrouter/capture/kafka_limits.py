"""What Kafka will not take from capture, and what capture does about it.

* Size: the raw topic's ``max.message.bytes`` (described, not assumed) sizes the producer, less
  :data:`FRAMING_MARGIN` for the record batch around a record. A change whose record is still too
  large is dead-lettered to ``<raw>.capture-dlq`` with headers that say which row it was.
* Errors no retry can fix (authorisation, an unknown topic, an invalid record) stop capture with
  the cause and a hint instead of replacing the producer again and again.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import fastavro
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource

from cdcrouter.capture.pgoutput import lsn_to_str
from cdcrouter.errors import CaptureError

log = logging.getLogger("cdcrouter.capture")

# The broker counts the record batch (61 bytes of header) and the record's own framing against
# max.message.bytes; the producer's own limit stays this far below the topic's.
FRAMING_MARGIN = 512
BATCH_BYTES = 1_000_000  # producer batch.size: well below the limit, so batches of small rows fit
HEADER = "cdcrouter.dlq."  # the dead-letter header prefix the consumer SDK and the router use

SIZE_ERRORS = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})

_HINTS: dict[int, str] = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "grant the capture user WRITE (and DESCRIBE) on the raw, "
    "offsets and dead-letter topics",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "grant the capture user IDEMPOTENT_WRITE on the cluster",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "grant the capture user WRITE on the "
    "TransactionalId cdcrouter-capture-*",
    KafkaError.SASL_AUTHENTICATION_FAILED: "check connections.kafka's SASL user and password",
    KafkaError._AUTHENTICATION: "check connections.kafka's credentials and TLS settings",
    KafkaError.UNKNOWN_TOPIC_OR_PART: "the topic is missing (deleted?); restart capture to create it, "
    "or run `cdcrouter topics apply`",
    KafkaError._UNKNOWN_TOPIC: "the topic is missing (deleted?); restart capture to create it, "
    "or run `cdcrouter topics apply`",
    KafkaError._UNKNOWN_PARTITION: "the topic has fewer partitions than expected; check it with "
    "`cdcrouter topics plan`",
    KafkaError.TOPIC_EXCEPTION: "the topic name is not valid for this broker",
    KafkaError.INVALID_MSG: "the broker refused a record as corrupt; report it with the broker log",
    KafkaError.INVALID_RECORD: "the broker refused a record (a topic policy, or compaction without "
    "a key); check the topic's configuration",
    KafkaError.POLICY_VIOLATION: "a broker policy refused the request; check the topic's configuration",
    KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT: "the topic's message format is too old for transactions; "
    "upgrade the broker's log.message.format.version",
    KafkaError._INVALID_ARG: "a producer setting is invalid; check connections.kafka",
}


class KafkaFatal(CaptureError):
    """Kafka refused something a retry cannot fix: capture stops with the cause and a hint."""


def permanent_error(err: KafkaError, what: str) -> KafkaFatal | None:
    """A KafkaFatal for an error no retry can fix (``what`` says what was being done), else None."""
    hint = _HINTS.get(err.code())
    if hint is None:  # includes librdkafka's fatal errors (fenced, epoch): a new producer fixes those
        return None
    return KafkaFatal(f"{what}: {err.str()} ({err.name()}); retrying cannot fix this", hint=hint)


def topic_max_message_bytes(
    kafka_conf: dict[str, Any], topic: str, configured: int, wait_s: float = 15.0
) -> int:
    """The topic's effective ``max.message.bytes`` (its own setting or the broker default).

    A topic created a moment ago may not be known to every broker yet: that is waited out for
    ``wait_s``; a topic still unknown after that is an error a retry cannot fix. A user without
    DESCRIBE_CONFIGS gets ``configured`` (the pipeline's ``raw_topic.max_message_bytes``) and a
    warning: a record the broker then refuses is still dead-lettered, through a replay.
    """
    admin = AdminClient(
        {**kafka_conf, "log_level": 3, "logger": logging.getLogger("cdcrouter.capture.kafka")}
    )
    deadline = time.monotonic() + wait_s
    while True:
        try:
            futures = admin.describe_configs(
                [ConfigResource(ConfigResource.Type.TOPIC, topic)], request_timeout=30
            )
            entries = next(iter(futures.values())).result(timeout=60)
            return int(entries["max.message.bytes"].value)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            if err.code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED):
                log.warning(
                    "cannot read %s's max.message.bytes (%s); assuming raw_topic.max_message_bytes = %d",
                    topic,
                    err.str(),
                    configured,
                )
                return configured
            raise permanent_error(err, f"cannot describe topic {topic}") or CaptureError(
                f"cannot describe topic {topic}: {err.str()}",
                hint="is Kafka running? `cdcrouter stack up --only kafka`, or check connections.kafka",
            ) from exc
        except Exception as exc:
            raise CaptureError(
                f"cannot describe topic {topic}: {exc}",
                hint="is Kafka running? `cdcrouter stack up --only kafka`, or check connections.kafka",
            ) from exc


def producer_limits(topic_limit: int, cap: int | None = None) -> dict[str, int]:
    """librdkafka settings so that whatever passes produce() also passes the broker's check
    (``cap``: a lower record limit learnt from the broker refusing records)."""
    message_max = max(1000, min(topic_limit - FRAMING_MARGIN, cap or topic_limit))
    return {"message.max.bytes": message_max, "batch.size": min(BATCH_BYTES, message_max)}


@dataclass(frozen=True, slots=True)
class Oversized:
    """A change whose record is larger than the raw topic takes."""

    key: bytes
    size: int  # key + value bytes
    limit: int  # the producer's limit it failed (topic max.message.bytes less framing)
    lsn: int  # WAL position of the change (0 when unknown, e.g. a snapshot row)
    table: str
    error: str

    def headers(self) -> list[tuple[str, bytes]]:
        fields = {
            "error": self.error,
            "stage": "capture",
            "table": self.table,
            "entity_id": self.key.decode(errors="replace"),
            "lsn": lsn_to_str(self.lsn) if self.lsn else "",
            "size": str(self.size),
            "limit": str(self.limit),
        }
        return [(HEADER + k, v.encode()) for k, v in fields.items()]

    def letter(self) -> bytes:
        """The dead-letter value: what happened, not the row (which is what did not fit)."""
        return json.dumps(
            {
                "reason": "record too large for the raw topic",
                "table": self.table,
                "entityId": self.key.decode(errors="replace"),
                "lsn": lsn_to_str(self.lsn) if self.lsn else None,
                "size": self.size,
                "limit": self.limit,
                "error": self.error,
                "hint": "raise the raw topic's max.message.bytes (pipeline raw_topic.max_message_bytes) "
                "or exclude the large column; the row is still in PostgreSQL",
            }
        ).encode()


def table_of(value: bytes, schema: Any) -> str:
    """sourceMetadata.table of an encoded BusinessEvent ('' if it cannot be read): rare path only."""
    try:
        event = fastavro.schemaless_reader(io.BytesIO(value[5:]), schema)
        return str(event["sourceMetadata"]["table"] or "")  # type: ignore[index,call-overload]
    except Exception:
        return ""
