"""Confluent wire format and the filtered-record fast path.

A Confluent-framed value is ``0x00`` + a big-endian 4-byte schema id + the Avro body. The filtered
schema is the raw schema plus one trailing record field, and Avro's binary encoding of a record is
the concatenation of its fields, so

    filtered value = header(filtered id) + raw body + encode(FilterMetadata)

is byte-for-byte what a full re-encode would produce. Only ``filteredAt`` changes per record; the
filter id and consumer id are encoded once per filter (:class:`MetadataEncoder`).
"""

from __future__ import annotations

import struct

from cdcrouter.capture.avro_fast import encode_long, encode_string

MAGIC = 0
HEADER_SIZE = 5
_HEADER = struct.Struct(">bI")


class WireFormatError(ValueError):
    """The value is not a Confluent-framed Avro record."""


def header(schema_id: int) -> bytes:
    """The 5-byte Confluent header for ``schema_id``."""
    return _HEADER.pack(MAGIC, schema_id)


def split(value: bytes | None) -> tuple[int, memoryview]:
    """``(schema id, body)`` of a framed value; raises WireFormatError on anything else."""
    if value is None:
        raise WireFormatError("empty value (tombstone): a business event cannot be null")
    if len(value) < HEADER_SIZE:
        raise WireFormatError(f"value of {len(value)} bytes is shorter than the 5-byte wire header")
    if value[0] != MAGIC:
        raise WireFormatError(f"unknown magic byte {value[0]} (expected 0, the Confluent wire format)")
    return _HEADER.unpack_from(value)[1], memoryview(value)[HEADER_SIZE:]


class MetadataEncoder:
    """Encodes ``FilterMetadata{filterId, consumerId, filteredAt}`` for one filter, fast.

    ``filteredAt`` (epoch ms) is the only varying part; the rest is computed once.
    """

    __slots__ = ("_cache_ms", "_cache_tail", "prefix")

    def __init__(self, filter_id: str, consumer_id: str) -> None:
        self.prefix = encode_string(filter_id) + encode_string(consumer_id)
        self._cache_ms = -1
        self._cache_tail = b""

    def encode(self, filtered_at_ms: int) -> bytes:
        if filtered_at_ms != self._cache_ms:
            self._cache_ms = filtered_at_ms
            self._cache_tail = self.prefix + encode_long(filtered_at_ms)
        return self._cache_tail


def filtered_value(filtered_header: bytes, raw_body: bytes | memoryview, metadata: bytes) -> bytes:
    """The filtered record without decoding or re-encoding the raw body."""
    return b"".join((filtered_header, raw_body, metadata))
