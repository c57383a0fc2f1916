"""The native (Rust) Avro codec for BusinessEvent, built from ``native/`` at install time."""

from typing import Any

def decode_business_event(buf: bytes | bytearray, offset: int = 0) -> dict[str, Any]:
    """The Avro body from ``buf[offset:]`` to the end, decoded exactly as fastavro's
    ``schemaless_reader`` with the raw schema; ValueError (field and byte offset named) when it
    is truncated, malformed, or followed by trailing bytes."""

def encode_business_event(event: dict[str, Any]) -> bytes:
    """The Avro binary body fastavro's ``schemaless_writer`` writes for ``event`` (no header);
    TypeError/ValueError naming the field for a malformed event."""

def try_cast_decimal(s: str | None) -> int | None:
    """``TRY_CAST(s AS DECIMAL(38, 10))`` times 10^10 as an int (exact), None for NULL and for
    None; the rules of ``sqlsem.parse_decimal``, which handles non-ASCII text for it."""
