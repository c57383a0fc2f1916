"""The registry speaks the Confluent API well enough for confluent-kafka's SchemaRegistryClient.

Always give SchemaRegistryClient a ``timeout``: its default is none, and once (of many runs) a
request to a freshly started Apicurio got no answer, which hung the session instead of failing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

import cdcrouter

pytestmark = pytest.mark.integration

SCHEMAS = Path(cdcrouter.__file__).parent / "schemas"


def test_register_fetch_by_id_and_check_compatibility(registry_url, unique_name):
    client = SchemaRegistryClient({"url": registry_url, "timeout": 30})
    subject = unique_name("raw-business-events") + "-value"
    text = (SCHEMAS / "raw-business-event.avsc").read_text()

    schema_id = client.register_schema(subject, Schema(text, "AVRO"))
    assert schema_id == client.register_schema(subject, Schema(text, "AVRO"))  # idempotent
    fetched = client.get_schema(schema_id)
    assert json.loads(fetched.schema_str)["name"] == json.loads(text)["name"]
    assert client.get_latest_version(subject).schema_id == schema_id

    record = json.loads(text)
    with_optional = dict(
        record, fields=[*record["fields"], {"name": "note", "type": ["null", "string"], "default": None}]
    )
    with_required = dict(record, fields=[*record["fields"], {"name": "must", "type": "string"}])
    client.set_compatibility(subject, "BACKWARD")
    assert client.test_compatibility(subject, Schema(json.dumps(with_optional), "AVRO")) is True
    assert client.test_compatibility(subject, Schema(json.dumps(with_required), "AVRO")) is False


def test_avro_round_trip_through_the_registry(registry_url, unique_name):
    client = SchemaRegistryClient({"url": registry_url, "timeout": 30})
    topic = unique_name("avro")
    schema = json.dumps(
        {
            "type": "record",
            "name": "Ping",
            "fields": [{"name": "n", "type": "long"}, {"name": "s", "type": "string"}],
        }
    )
    ser = AvroSerializer(client, schema)
    ctx = SerializationContext(topic, MessageField.VALUE)
    payload = ser({"n": 7, "s": "x"}, ctx)
    assert payload[0] == 0  # Confluent wire format: magic byte, then the 4-byte schema id
    schema_id = int.from_bytes(payload[1:5], "big")
    assert json.loads(client.get_schema(schema_id).schema_str)["name"] == "Ping"
    fresh = SchemaRegistryClient(
        {"url": registry_url, "timeout": 30}
    )  # no cache: the id must resolve on the server
    assert AvroDeserializer(fresh)(payload, ctx) == {"n": 7, "s": "x"}
