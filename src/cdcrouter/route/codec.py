"""Decoding raw records once, and building filtered records by the fast or the safe path.

A writer schema is fetched from the registry once per schema id. When it is the contract's raw
schema (same parsing canonical form), the record is decoded by the native codec
(:mod:`cdcrouter._native`: several times faster than fastavro, and checked against it byte for
byte) and the filtered value is built by passing the raw body through (:mod:`cdcrouter.route.wire`).
Any other writer schema (an evolved raw schema, say) is decoded into the contract's raw shape by
Avro schema resolution and re-encoded with the filtered schema: slower, but always a valid
FilteredBusinessEvent.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.schema import to_parsing_canonical_form

from cdcrouter._native import decode_business_event
from cdcrouter.route.wire import HEADER_SIZE, WireFormatError, header, split
from cdcrouter.schemas import parsed_filtered_schema, parsed_raw_schema, raw_schema

__all__ = ["DecodeError", "RawDecoder", "WriterSchema", "encode_filtered"]


class DecodeError(ValueError):
    """A record that cannot be decoded: it goes to the dead-letter topic."""


@dataclass(frozen=True)
class WriterSchema:
    schema_id: int
    parsed: Any
    passthrough: bool  # identical to the contract's raw schema: the body can be reused as is


class RawDecoder:
    """Decodes Confluent-framed raw events; caches writer schemas by id."""

    def __init__(self, fetch_schema: Any) -> None:
        """``fetch_schema(id) -> schema text | None`` (None: the registry has no such id)."""
        self._fetch = fetch_schema
        self._schemas: dict[int, WriterSchema] = {}
        self._raw_canonical = to_parsing_canonical_form(fastavro.parse_schema(raw_schema()))
        self._reader = parsed_raw_schema()
        self._passthrough: dict[bytes, WriterSchema] = {}  # wire header -> contract-schema writer
        self._unknown: dict[int, float] = {}  # id -> when the registry said "no such id"

    UNKNOWN_TTL_S = 30.0  # ask again after this long: the schema may have been registered since

    def writer(self, schema_id: int) -> WriterSchema:
        ws = self._schemas.get(schema_id)
        if ws is None:
            asked = self._unknown.get(schema_id)
            if asked is not None and time.monotonic() - asked < self.UNKNOWN_TTL_S:
                raise DecodeError(f"unknown schema id {schema_id}: the registry has no such schema")
            text = self._fetch(schema_id)
            if text is None:
                self._unknown[schema_id] = time.monotonic()
                raise DecodeError(f"unknown schema id {schema_id}: the registry has no such schema")
            try:
                parsed = fastavro.parse_schema(_json(text))
            except Exception as exc:
                raise DecodeError(f"schema id {schema_id} is not a usable Avro schema: {exc}") from exc
            ws = WriterSchema(schema_id, parsed, to_parsing_canonical_form(parsed) == self._raw_canonical)
            self._schemas[schema_id] = ws
            if ws.passthrough:
                self._passthrough[header(schema_id)] = ws
        return ws

    def decode(self, value: bytes | None) -> tuple[dict[str, Any], memoryview, WriterSchema]:
        """``(event, body, writer)``; raises DecodeError for anything that is not a raw event."""
        # the hot path: a wire header seen before that names the contract's own schema
        ws = self._passthrough.get(value[:HEADER_SIZE]) if type(value) is bytes else None
        if ws is None:
            try:
                schema_id, body = split(value)
            except WireFormatError as exc:
                raise DecodeError(str(exc)) from exc
            ws = self.writer(schema_id)
            if not ws.passthrough:
                return self._resolve(body, ws), body, ws
            value = value if type(value) is bytes else bytes(value)
        # The native decoder reads the framed value in place and checks there are no trailing
        # bytes (it returns exactly what fastavro would).
        try:
            return decode_business_event(value, HEADER_SIZE), memoryview(value)[HEADER_SIZE:], ws
        except ValueError as exc:
            raise DecodeError(f"not a valid Avro record for schema id {ws.schema_id}: {exc}") from exc

    def _resolve(self, body: memoryview, ws: WriterSchema) -> dict[str, Any]:
        """Another writer schema: read into the contract's raw shape by Avro schema resolution."""
        schema_id = ws.schema_id
        stream = io.BytesIO(body)
        try:
            event = fastavro.schemaless_reader(stream, ws.parsed, self._reader)
        except SchemaResolutionError as exc:
            raise DecodeError(
                f"schema id {schema_id} cannot be read as a BusinessEvent (Avro schema resolution failed)"
            ) from exc
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"[:300]
            raise DecodeError(f"not a valid Avro record for schema id {schema_id}: {detail}") from exc
        if stream.tell() != len(body):
            raise DecodeError(
                f"{len(body) - stream.tell()} trailing bytes after the Avro record (schema id {schema_id}): "
                "the writer used another schema than the one its id names"
            )
        if not isinstance(event, dict):
            raise DecodeError(f"schema id {schema_id} does not describe a BusinessEvent record")
        return event


def _json(text: str) -> Any:
    import json

    return json.loads(text)


def encode_filtered(event: dict[str, Any], metadata: dict[str, Any]) -> bytes:
    """The filtered Avro body by full re-encode (the safe path, and the fast path's reference)."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed_filtered_schema(), {**event, "filterMetadata": metadata})
    return buf.getvalue()
