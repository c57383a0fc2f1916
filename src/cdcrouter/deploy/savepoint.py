"""Read the Kafka source positions out of a Flink savepoint.

Why: after an update the new statement set rarely has the old job graph, so Flink cannot map the
old source operator's state onto the new one, and the offsets the Kafka source commits to its
consumer group lag behind (they are sent asynchronously and were seen missing entirely after
an idle stop). The savepoint itself is exact: a small source's reader state is stored inline in
``_metadata`` as serialized ``KafkaPartitionSplit`` records (topic as modified UTF-8 with a 2-byte
length, partition int32, next offset int64, stopping offset int64, all big-endian). Reader splits
carry the next offset to read (>= 0); the enumerator's copies carry negative sentinels and are
skipped.
"""

from __future__ import annotations

import struct
from pathlib import Path
from urllib.parse import urlparse

from cdcrouter.errors import DeployError


def local_path(location: str) -> Path:
    """``file:/x`` or ``file:///x`` → ``/x``; other schemes cannot be read here."""
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        raise DeployError(
            f"savepoint {location} is not on a local file system",
            hint="use a file:// savepoint dir reachable from this machine (--savepoint-dir)",
        )
    return Path(parsed.path)


def source_offsets(location: str, topic: str) -> dict[int, int] | None:
    """Next offset per partition of ``topic`` as the savepoint's Kafka source readers hold them.

    Returns ``{}`` when the source had read nothing yet, ``None`` when the savepoint holds no
    split of ``topic`` at all (not this job's savepoint, or its state was not stored inline).
    """
    meta = local_path(location) / "_metadata"
    try:
        data = meta.read_bytes()
    except OSError as exc:
        raise DeployError(f"cannot read savepoint metadata {meta}: {exc}") from exc
    name = topic.encode()
    needle = struct.pack(">H", len(name)) + name
    found: dict[int, int] = {}
    at = data.find(needle)
    if at < 0:
        return None
    while at >= 0:
        tail = at + len(needle)
        if tail + 20 <= len(data):
            partition, offset, _stop = struct.unpack(">iqq", data[tail : tail + 20])
            if partition >= 0 and offset >= 0:
                found[partition] = max(offset, found.get(partition, -1))
        at = data.find(needle, at + 1)
    return found


def format_specific_offsets(offsets: dict[int, int]) -> str:
    return ";".join(f"partition:{p},offset:{o}" for p, o in sorted(offsets.items()))
