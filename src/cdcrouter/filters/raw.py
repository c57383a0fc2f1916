"""The raw model: the YAML's shape, positions kept, nothing resolved yet.

The loader turns ruamel's round-trip tree into these dataclasses; validation (``resolve.py``)
turns them into the typed IR. No plain dicts travel past the loader.
"""

from __future__ import annotations

from dataclasses import dataclass

from cdcrouter.filters.span import Span


@dataclass(frozen=True, slots=True)
class RawScalar:
    """A YAML scalar with where it was written. ``text`` is the source token for plain numbers."""

    value: object
    span: Span
    text: str | None = None


@dataclass(frozen=True, slots=True)
class RawList:
    items: tuple[RawScalar, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class RawCondition:
    """One ``field``/``operator`` condition as written."""

    span: Span
    field: RawScalar | None
    operator: RawScalar | None
    value: RawScalar | None = None
    values: RawList | None = None
    min: RawScalar | None = None
    max: RawScalar | None = None
    value_type: RawScalar | None = None
    logical_operator: RawScalar | None = None


@dataclass(frozen=True, slots=True)
class RawGroup:
    """``any:``/``all:``/``not:``/``anyEntity:`` with nested items."""

    span: Span
    kind: str
    items: tuple[RawItem, ...]
    logical_operator: RawScalar | None = None


RawItem = RawCondition | RawGroup


@dataclass(frozen=True, slots=True)
class RawFilter:
    span: Span
    id: RawScalar | None
    name: RawScalar | None
    description: RawScalar | None
    consumer_id: RawScalar | None
    output_topic: RawScalar | None
    enabled: RawScalar | None
    condition_logic: RawScalar | None
    conditions: tuple[RawItem, ...]
    conditions_span: Span | None


@dataclass(frozen=True, slots=True)
class RawFilterSet:
    file: str
    filters: tuple[RawFilter, ...]
    span: Span
    max_entities: RawScalar | None = None  # settings.maxEntities
