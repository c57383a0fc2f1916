"""The native (Rust) Avro codec for BusinessEvent, built from ``native/`` at install time."""

from typing import Any

class Projection:
    """Where an evolved raw writer schema adds fields to the contract's records (see
    ``cdcrouter.schemas.evolution.projection_gaps``): one list of gaps per record, a gap being the
    skip specs of the added fields before a contract field (the last: after the last field)."""

    def __init__(
        self,
        event: list[list[Any]],
        header: list[list[Any]],
        body: list[list[Any]],
        entity: list[list[Any]],
        source: list[list[Any]],
    ) -> None: ...

class RowPlan:
    """``capture.fastpath.RowEncoder.encode`` for one relation's simple messages: per column the
    encoded ``key + 0x02`` and ``key + 0x00`` and a plan code, the entity-id column, and the fixed
    parts of its events (head, uuid namespace, ``:<table>:``, mid, names and tails per operation)."""

    def __init__(
        self,
        some: list[bytes],
        null: list[bytes],
        codes: list[int],
        id_index: int,
        event: tuple[bytes, bytes, bytes, bytes, list[bytes], list[bytes]] | None = None,
    ) -> None: ...
    def encode(self, buf: bytes, lsn: int, ms: bytes, saved: bytes) -> tuple[bytes, bytes] | None:
        """(key, value); an empty value when the entity id changed (KeyMoved); None: do it in Python."""

def build_info() -> dict[str, str]:
    """The codec build: ``crate``, ``version`` (Cargo), ``profile`` (release/debug), ``arch``, ``os``."""

def decode_business_event(
    buf: bytes | bytearray, offset: int = 0, projection: Projection | None = None
) -> dict[str, Any]:
    """The Avro body from ``buf[offset:]`` to the end, decoded exactly as fastavro's
    ``schemaless_reader`` with the raw schema as reader (and the evolved writer schema the
    ``projection`` describes as writer); ValueError (field and byte offset named) when it is
    truncated, malformed, or followed by trailing bytes."""

def encode_business_event(event: dict[str, Any]) -> bytes:
    """The Avro binary body fastavro's ``schemaless_writer`` writes for ``event`` (no header);
    TypeError/ValueError naming the field for a malformed event."""

def try_cast_decimal(s: str | None) -> int | None:
    """``TRY_CAST(s AS DECIMAL(38, 10))`` times 10^10 as an int (exact), None for NULL and for
    None; the rules of ``sqlsem.parse_decimal``, which handles non-ASCII text for it."""
