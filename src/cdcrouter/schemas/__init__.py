"""The event contract: the raw and filtered Avro schemas shipped as ``.avsc`` files.

``filtered-business-event.avsc`` is the raw record plus a trailing ``filterMetadata`` field, so a
router can pass the raw Avro body through and append the metadata bytes (see
:mod:`cdcrouter.route.wire`). Registry operations live in :mod:`cdcrouter.schemas.registry`; what an
evolved raw writer schema means for the contract (can it be read, its derived filtered schema) in
:mod:`cdcrouter.schemas.evolution`.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "FILTERED_SCHEMA_FILE",
    "RAW_SCHEMA_FILE",
    "filtered_schema",
    "filtered_schema_text",
    "parsed_filtered_schema",
    "parsed_raw_schema",
    "raw_schema",
    "raw_schema_text",
]

RAW_SCHEMA_FILE = "raw-business-event.avsc"
FILTERED_SCHEMA_FILE = "filtered-business-event.avsc"


def _text(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def raw_schema_text() -> str:
    """The raw BusinessEvent schema, compact JSON (what gets registered)."""
    return json.dumps(raw_schema(), separators=(",", ":"))


def filtered_schema_text() -> str:
    """The FilteredBusinessEvent schema, compact JSON (what gets registered)."""
    return json.dumps(filtered_schema(), separators=(",", ":"))


@cache
def _raw() -> str:
    return _text(RAW_SCHEMA_FILE)


@cache
def _filtered() -> str:
    return _text(FILTERED_SCHEMA_FILE)


def raw_schema() -> dict[str, Any]:
    """A fresh dict of the raw schema (callers may mutate it)."""
    return json.loads(_raw())


def filtered_schema() -> dict[str, Any]:
    """A fresh dict of the filtered schema (callers may mutate it)."""
    return json.loads(_filtered())


@cache
def parsed_raw_schema() -> Any:
    """The raw schema parsed by fastavro (cached; do not mutate)."""
    import fastavro

    return fastavro.parse_schema(raw_schema())


@cache
def parsed_filtered_schema() -> Any:
    """The filtered schema parsed by fastavro (cached; do not mutate)."""
    import fastavro

    return fastavro.parse_schema(filtered_schema())
