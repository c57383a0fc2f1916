"""Dead-letter topics: naming and the headers that say what failed and where it came from.

A dead-lettered record keeps its original key, value and headers byte for byte, so a replay
re-delivers exactly what the consumer first saw. The ``cdcrouter.dlq.*`` headers carry the error
and the origin (topic, partition, offset); older ``cdcrouter.dlq.*`` headers from an earlier
dead-lettering are dropped, so the newest failure is the one described.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterable

H = "cdcrouter.dlq."
SUFFIX = ".dlq"
CAPTURE_SUFFIX = ".capture-dlq"  # <raw>.capture-dlq: changes capture could not turn into events
# The routing engine's dead-letter headers (``cdcrouter.route``), read the same way so that
# ``cdcrouter dlq list|replay`` work on its DLQ too.
ALIASES = {
    "cdcrouter.error": "error",
    "cdcrouter.source.topic": "topic",
    "cdcrouter.source.partition": "partition",
    "cdcrouter.source.offset": "offset",
    "cdcrouter.value.omitted": "value.omitted",
}


# what to do about a letter in capture's <raw>.capture-dlq: it describes a change too large for the
# raw topic (table, entity id, LSN) and holds no record, so there is nothing to replay
CAPTURE_DLQ_HINT = (
    "raise raw_topic.max_message_bytes in pipeline.yaml, run cdcrouter topics apply and restart "
    "capture (it reads the raw topic's limit at start), then send each row again: "
    "cdcrouter capture snapshot --pipeline pipeline.yaml --table <table> "
    "--where \"<key> = '<entity id>'\" (cdcrouter dlq list names them)"
)


def _ours(name: str) -> bool:
    return name.startswith(H) or name in ALIASES


Headers = list[tuple[str, bytes]]


def dlq_topic(topic: str, consumer: str) -> str:
    """``<topic>.<consumer>.dlq``: one dead-letter topic per source topic and consumer."""
    return f"{topic}.{consumer}{SUFFIX}"


def failure_headers(
    original: Iterable[tuple[str, bytes | None]] | None,
    *,
    error: BaseException,
    stage: str,
    topic: str,
    partition: int,
    offset: int,
    timestamp: int | None,
    consumer: str,
    group: str,
    attempts: int,
    event_uuid: str | None,
) -> Headers:
    kept = [(k, v or b"") for k, v in (original or []) if not _ours(k)]
    stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    fields = {
        "error": f"{type(error).__name__}: {error}"[:2000],
        "error.type": f"{type(error).__module__}.{type(error).__qualname__}",
        "error.stack": stack[-4000:],
        "stage": stage,
        "topic": topic,
        "partition": str(partition),
        "offset": str(offset),
        "timestamp": "" if timestamp is None else str(timestamp),
        "consumer": consumer,
        "group": group,
        "attempts": str(attempts),
        "failed_at": str(int(time.time() * 1000)),
        "event_uuid": event_uuid or "",
    }
    return kept + [(H + k, v.encode()) for k, v in fields.items()]


def header_map(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """The ``cdcrouter.dlq.*`` headers (or the router's aliases) as ``{name-without-prefix: text}``."""
    out: dict[str, str] = {}
    for k, v in headers or []:
        text = (v or b"").decode("utf-8", "replace")
        if k.startswith(H):
            out[k[len(H) :]] = text
        elif k in ALIASES:
            out.setdefault(ALIASES[k], text)
    return out


def strip(headers: Iterable[tuple[str, bytes | None]] | None) -> Headers:
    """The original record's headers, without ours (what a replay produces)."""
    return [(k, v or b"") for k, v in (headers or []) if not _ours(k)]
