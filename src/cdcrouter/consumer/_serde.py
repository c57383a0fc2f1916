"""Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro body) over a registry.

A small httpx client of the Confluent Schema Registry REST API (also served by Apicurio's
``/apis/ccompat/v7``) instead of ``confluent_kafka.schema_registry``, whose extra pulls in an
OAuth stack we do not need. Schemas are fetched once per id and parsed once.
"""

from __future__ import annotations

import io
import struct
import threading
from typing import Any

import fastavro
import httpx
import orjson

from cdcrouter.config import RegistrySettings
from cdcrouter.consumer._errors import ConsumerError, DecodeError

_HEADER = struct.Struct(">bI")


class RegistryClient:
    """Fetch schemas by id and register them under a subject (thread-safe cache)."""

    def __init__(self, settings: RegistrySettings, timeout: float = 10.0) -> None:
        auth = None
        if settings.basic_auth_user_info is not None:
            user, _, password = settings.basic_auth_user_info.get_secret_value().partition(":")
            auth = httpx.BasicAuth(user, password)
        self.url = settings.url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, auth=auth, timeout=timeout, verify=settings.ssl_ca_location or True
        )
        self._parsed: dict[int, Any] = {}
        self._lock = threading.Lock()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ConsumerError(
                f"schema registry {self.url} unreachable: {exc}",
                hint="start it (cdcrouter stack up) or set CDCROUTER_REGISTRY__URL",
            ) from exc
        if resp.status_code >= 400:
            raise ConsumerError(
                f"schema registry {method} {path}: HTTP {resp.status_code} {resp.text[:200]}",
                hint="check the registry URL, credentials and that the schema id/subject exists",
            )
        return resp.json()

    def schema(self, schema_id: int) -> Any:
        """The parsed Avro schema for ``schema_id`` (fetched once)."""
        with self._lock:
            parsed = self._parsed.get(schema_id)
        if parsed is None:
            body = self._call("GET", f"/schemas/ids/{schema_id}")
            parsed = fastavro.parse_schema(orjson.loads(body["schema"]))
            with self._lock:
                self._parsed[schema_id] = parsed
        return parsed

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """Register (or find) ``schema`` under ``subject``; returns its global id."""
        body = self._call(
            "POST",
            f"/subjects/{subject}/versions",
            content=orjson.dumps({"schema": orjson.dumps(schema).decode(), "schemaType": "AVRO"}),
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        )
        schema_id = int(body["id"])
        with self._lock:
            self._parsed.setdefault(schema_id, fastavro.parse_schema(schema))
        return schema_id

    def close(self) -> None:
        self._http.close()


def decode(registry: RegistryClient, value: bytes | None) -> dict[str, Any]:
    """Decode one Confluent-wire-format Avro value; :class:`DecodeError` when it is not one."""
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
