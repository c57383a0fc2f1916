"""Fixtures for the consumer tests: the real stack's connections, unique topics, event producers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from typing import Any

import fastavro
import psycopg
import pytest
from confluent_kafka import Producer

from cdcrouter.config import Connections
from cdcrouter.consumer import RegistryClient
from cdcrouter.consumer._kafka import admin, ensure_topic, producer_conf
from cdcrouter.consumer._serde import encode

FILTERED_SCHEMA = json.loads(
    resources.files("cdcrouter.schemas").joinpath("filtered-business-event.avsc").read_text()
)


@pytest.fixture(scope="session")
def conns(stack_with: Callable[..., Any]) -> Connections:
    """Connections to the shared local stack (PostgreSQL, Kafka, registry), started once if needed."""
    return stack_with("postgres", "kafka", "registry").connections


@pytest.fixture
def topic(conns: Connections) -> Iterator[Callable[..., str]]:
    """Create a unique topic: ``topic(partitions=3)``; it and its DLQs are deleted afterwards."""
    made: list[str] = []

    def make(partitions: int = 3, prefix: str = "t-consumer") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        ensure_topic(conns, name, partitions)
        made.append(name)
        return name

    yield make
    client = admin(conns)
    existing = client.list_topics(timeout=10).topics
    doomed = [t for t in existing if any(t == m or t.startswith(m + ".") for m in made)]
    if doomed:
        for future in client.delete_topics(doomed, operation_timeout=30).values():
            future.result(timeout=30)


def event(name: str, entity_id: str, attrs: dict[str, str | None] | None = None, **kw: Any) -> dict[str, Any]:
    """A FilteredBusinessEvent record (defaults fill the rest)."""
    return {
        "eventHeader": {
            "uuid": kw.get("uuid") or str(uuid.uuid4()),
            "eventName": name,
            "createdDate": 1_700_000_000_000,
            "savedDate": 1_700_000_000_001,
            "eventType": None,
        },
        "eventBody": {
            "entities": [
                {
                    "entityType": kw.get("entity_type", "Loan"),
                    "entityId": entity_id,
                    "updatedAttributes": attrs or {},
                }
            ]
        },
        "sourceMetadata": {
            "table": kw.get("table"),
            "operation": kw.get("operation", "INSERT"),
            "timestamp": None,
        },
        "filterMetadata": {
            "filterId": "f",
            "consumerId": kw.get("consumer", "c"),
            "filteredAt": 1_700_000_000_002,
        },
    }


@pytest.fixture
def produce(conns: Connections) -> Callable[..., list[str]]:
    """Produce records in the Confluent wire format with the registered filtered schema; returns uuids."""
    registry = RegistryClient(conns.registry)
    producer = Producer(producer_conf(conns))
    parsed = fastavro.parse_schema(FILTERED_SCHEMA)

    def send(topic: str, records: Iterable[dict[str, Any]], partition: int | None = None) -> list[str]:
        schema_id = registry.register(f"{topic}-value", FILTERED_SCHEMA)
        uuids = []
        for rec in records:
            key = rec["eventBody"]["entities"][0]["entityId"].encode()
            kw = {} if partition is None else {"partition": partition}
            producer.produce(topic, key=key, value=encode(schema_id, parsed, rec), **kw)
            uuids.append(rec["eventHeader"]["uuid"])
        assert producer.flush(30) == 0
        return uuids

    yield send
    registry.close()


def produce_raw(conns: Connections, topic: str, value: bytes, key: bytes = b"k") -> None:
    p = Producer(producer_conf(conns))
    p.produce(topic, key=key, value=value)
    assert p.flush(30) == 0


@pytest.fixture
def effects(conns: Connections) -> Iterator[str]:
    """A unique table of handler effects (one row per handler run), dropped afterwards."""
    name = f"effects_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(conns.postgres.conninfo(), autocommit=True) as c:
        c.execute(f"CREATE TABLE {name} (event_uuid text NOT NULL)")
    yield name
    with psycopg.connect(conns.postgres.conninfo(), autocommit=True) as c:
        c.execute(f"DROP TABLE IF EXISTS {name}")
        c.execute(f"DROP TABLE IF EXISTS {name}_seen")


def rows(conns: Connections, table: str) -> list[str]:
    with psycopg.connect(conns.postgres.conninfo()) as c:
        return [r[0] for r in c.execute(f"SELECT event_uuid FROM {table}")]
