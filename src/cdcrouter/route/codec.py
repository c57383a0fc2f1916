"""Decoding raw records once, and framing filtered records around the untouched raw body.

A writer schema is fetched from the registry once per schema id. When it is the contract's raw
schema (same parsing canonical form), the record is decoded by the native codec
(:mod:`cdcrouter._native`: several times faster than fastavro, and checked against it byte for
byte) and the filtered value is the raw body with the filtered schema's header and the encoded
``filterMetadata`` around it (:mod:`cdcrouter.route.wire`).

Any other writer schema (an evolved raw schema: capture upgrades first) is first checked against
the contract once (:func:`cdcrouter.schemas.evolution.resolution_problem`): if the contract cannot
read it, every record written with it is dead-lettered with a reason naming the field. Otherwise
its records are read into the contract's shape for the filters (Avro schema resolution), and the
raw body is still passed through, under the filtered schema derived from the writer schema
(:class:`FilteredSchemas`), so a filtered record carries every field its raw record carried.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from typing import Any

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.schema import to_parsing_canonical_form

from cdcrouter import _native
from cdcrouter._native import decode_business_event
from cdcrouter.route.wire import HEADER_SIZE, WireFormatError, header, split
from cdcrouter.schemas import parsed_filtered_schema, parsed_raw_schema, raw_schema
from cdcrouter.schemas.evolution import derived_filtered_text, projection_gaps, resolution_problem
from cdcrouter.schemas.registry import RegistryClient, SchemaRefused, subject_for

__all__ = ["DecodeError", "FilteredSchemas", "RawDecoder", "WriterSchema", "encode_filtered"]


_PROJECTION_ARGS = ("event", "header", "body", "entity", "source")  # Projection's parameters
# None in a native build from before native/src/projection.rs (rebuild: pip install -e .): evolved
# writers are then read by fastavro, slower but the same dicts; nothing else changes.
Projection: Any = getattr(_native, "Projection", None)


class DecodeError(ValueError):
    """A record that cannot be decoded: it goes to the dead-letter topic."""


@dataclass(frozen=True)
class WriterSchema:
    schema_id: int
    parsed: Any
    passthrough: bool  # the contract's raw schema: filtered records take the route's own header
    problem: str | None = None  # why the contract cannot read this writer schema (its records: DLQ)
    filtered_text: str | None = None  # evolved writer: the filtered schema derived from it
    # evolved writer: filtered topic -> header of the derived schema's id there (FilteredSchemas)
    headers: dict[str, bytes] = field(default_factory=dict, compare=False)
    # evolved writer of the contract's shape plus added fields: the native decoder reads it
    projection: Any = None  # cdcrouter._native.Projection


class RawDecoder:
    """Decodes Confluent-framed raw events; caches writer schemas by id."""

    def __init__(self, fetch_schema: Any) -> None:
        """``fetch_schema(id) -> schema text | None`` (None: the registry has no such id)."""
        self._fetch = fetch_schema
        self._schemas: dict[int, WriterSchema] = {}
        self._raw_canonical = to_parsing_canonical_form(fastavro.parse_schema(raw_schema()))
        self._reader = parsed_raw_schema()
        self._native: dict[bytes, WriterSchema] = {}  # wire header -> a writer the native codec reads
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
            ws = self._describe(schema_id, text, parsed)
            self._schemas[schema_id] = ws
            if ws.passthrough or ws.projection is not None:
                self._native[header(schema_id)] = ws
        return ws

    def _describe(self, schema_id: int, text: str, parsed: Any) -> WriterSchema:
        if to_parsing_canonical_form(parsed) == self._raw_canonical:
            return WriterSchema(schema_id, parsed, True)
        problem = resolution_problem(parsed, self._reader)
        filtered_text = None
        if problem is None:
            try:
                filtered_text = derived_filtered_text(text)
            except ValueError as exc:
                problem = str(exc)
        if problem is not None:
            problem = f"schema id {schema_id} cannot be read as a BusinessEvent: {problem}"
            return WriterSchema(schema_id, parsed, False, problem)
        gaps = projection_gaps(parsed, self._reader) if Projection is not None else None
        projection = None if gaps is None else Projection(*(gaps[k] for k in _PROJECTION_ARGS))
        return WriterSchema(schema_id, parsed, False, None, filtered_text, projection=projection)

    def decode(self, value: bytes | None) -> tuple[dict[str, Any], memoryview, WriterSchema]:
        """``(event, body, writer)``; raises DecodeError for anything that is not a raw event."""
        # the hot path: a wire header seen before that names a writer the native codec reads
        ws = self._native.get(value[:HEADER_SIZE]) if type(value) is bytes else None
        if ws is None:
            try:
                schema_id, body = split(value)
            except WireFormatError as exc:
                raise DecodeError(str(exc)) from exc
            ws = self.writer(schema_id)
            if ws.problem is not None:
                raise DecodeError(ws.problem)
            if not ws.passthrough and ws.projection is None:
                return self._resolve(body, ws), body, ws
            value = value if type(value) is bytes else bytes(value)
        # The native decoder reads the framed value in place and checks there are no trailing
        # bytes (it returns exactly what fastavro would, with the contract as reader schema).
        projection = ws.projection
        try:
            if projection is None:
                return decode_business_event(value, HEADER_SIZE), memoryview(value)[HEADER_SIZE:], ws
            return decode_business_event(value, HEADER_SIZE, projection), memoryview(value)[HEADER_SIZE:], ws
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
    return json.loads(text)


class FilteredSchemas:
    """The filtered schema derived from each evolved raw writer schema, registered under each
    filtered subject it is routed to (once per writer schema id and topic, then cached on the
    :class:`WriterSchema`).

    An id already registered is only looked up, so a router with read-only registry credentials
    works once ``schemas apply`` or another instance has registered it. A registration the registry
    refuses (the subject's compatibility check) makes the records dead letters, with the registry's
    word; asked again after ``REFUSED_TTL_S``. An unreachable registry is an outage: it raises."""

    REFUSED_TTL_S = 30.0

    def __init__(self, registry: RegistryClient) -> None:
        self._registry = registry
        self._refused: dict[tuple[int, str], tuple[float, str]] = {}

    def header(self, writer: WriterSchema, topic: str) -> bytes:
        """The wire header for ``writer``'s records in ``topic``; DecodeError if it is refused."""
        head = writer.headers.get(topic)
        if head is None:
            head = writer.headers[topic] = header(self._register(writer, topic))
        return head

    def _register(self, writer: WriterSchema, topic: str) -> int:
        assert writer.filtered_text is not None
        key = (writer.schema_id, topic)
        refused = self._refused.get(key)
        if refused is not None and time.monotonic() - refused[0] < self.REFUSED_TTL_S:
            raise DecodeError(refused[1])
        subject = subject_for(topic)
        schema_id = self._registry.lookup(subject, writer.filtered_text)
        if schema_id is not None:
            return schema_id
        try:
            return self._registry.register(subject, writer.filtered_text)
        except SchemaRefused as exc:
            why = (
                f"the filtered schema derived from raw schema id {writer.schema_id} was refused "
                f"under {subject}: {exc.message}"
            )
            self._refused[key] = (time.monotonic(), why)
            raise DecodeError(why) from exc


def encode_filtered(event: dict[str, Any], metadata: dict[str, Any]) -> bytes:
    """The contract's filtered Avro body by a full fastavro re-encode: not used for routing (every
    record's raw body is passed through), kept as the reference the pass-through is checked against
    (tests/route/test_wire.py, the bench framing test)."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed_filtered_schema(), {**event, "filterMetadata": metadata})
    return buf.getvalue()
