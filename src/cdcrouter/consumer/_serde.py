"""Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro body) over a registry.

The registry client is ``cdcrouter.schemas.registry.RegistryClient`` (our small httpx client of the
Confluent REST API, also served by Apicurio's ``/apis/ccompat/v7``) rather than
``confluent_kafka.schema_registry``, whose extra pulls in an OAuth stack we do not need. The SDK's
subclass only adds a parsed-schema cache (each id fetched and parsed once) and ConsumerError.
"""

from __future__ import annotations

import io
import struct
import threading
from collections.abc import Mapping
from typing import Any

import fastavro
import orjson

from cdcrouter.config import RegistrySettings
from cdcrouter.consumer._errors import ConsumerError, DecodeError
from cdcrouter.schemas import registry

_HEADER = struct.Struct(">bI")


class RegistryError(ConsumerError, registry.SchemaRegistryError):
    """A registry failure in the SDK: catchable as ConsumerError and as SchemaRegistryError."""


class UnknownSchemaId(RegistryError):
    """The registry answered: it has no schema with this id. The app stops on it (the wrong
    registry, most likely); ``cdcrouter consume`` reports the record and goes on."""


class RegistryClient(registry.RegistryClient):
    """The shared registry client, built from ``RegistrySettings``, with a thread-safe schema cache."""

    error = RegistryError

    def __init__(self, settings: RegistrySettings, timeout: float | None = None) -> None:
        """``timeout`` (seconds) overrides ``settings.timeout_s``."""
        super().__init__(settings.to_client_conf(), timeout)
        self._parsed: dict[int, Any] = {}
        self._lock = threading.Lock()

    def schema(self, schema_id: int) -> Any:
        """The parsed Avro schema for ``schema_id`` (fetched once)."""
        with self._lock:
            parsed = self._parsed.get(schema_id)
        if parsed is None:
            text = self.schema_by_id(schema_id)
            if text is None:
                raise UnknownSchemaId(
                    f"schema registry {self.url}: no schema with id {schema_id}",
                    hint="the record names a schema id this registry does not have: "
                    "is the consumer using the producer's registry (CDCROUTER_REGISTRY__URL)?",
                )
            parsed = fastavro.parse_schema(orjson.loads(text))
            with self._lock:
                parsed = self._parsed.setdefault(schema_id, parsed)
        return parsed

    def register(self, subject: str, schema: str | Mapping[str, Any]) -> int:
        """Register (or find) ``schema`` under ``subject``; returns its global id, parsed and cached."""
        schema_id = super().register(subject, schema)
        with self._lock:
            if schema_id not in self._parsed:
                raw = orjson.loads(schema) if isinstance(schema, str) else dict(schema)
                self._parsed[schema_id] = fastavro.parse_schema(raw)
        return schema_id


def decode(registry: RegistryClient, value: bytes | None) -> dict[str, Any]:
    """Decode one Confluent-wire-format Avro value with its writer schema (every field it wrote,
    added fields included); :class:`DecodeError` when it is not one."""
    if value is None:
        raise DecodeError("record has no value (tombstone)", hint="filtered topics never carry tombstones")
    if len(value) < _HEADER.size or value[0] != 0:
        raise DecodeError(
            "value is not in the Confluent wire format (magic byte 0 + schema id + Avro)",
            hint="produce with a Confluent-compatible Avro serializer",
        )
    _, schema_id = _HEADER.unpack_from(value)
    schema = registry.schema(schema_id)
    try:
        record = fastavro.schemaless_reader(io.BytesIO(value[_HEADER.size :]), schema, None)
    except Exception as exc:  # fastavro raises a zoo of types on garbage
        raise DecodeError(
            f"Avro body does not match schema id {schema_id}: {type(exc).__name__}: {exc}",
            hint="the producer wrote with a different schema than the id it announced",
        ) from exc
    if not isinstance(record, dict):
        raise DecodeError(f"schema id {schema_id} is not a record schema")
    return record


def encode(schema_id: int, parsed_schema: Any, record: dict[str, Any]) -> bytes:
    """Encode ``record`` in the Confluent wire format (used by tests, the demo and replays)."""
    buf = io.BytesIO()
    buf.write(_HEADER.pack(0, schema_id))
    fastavro.schemaless_writer(buf, parsed_schema, record)
    return buf.getvalue()
