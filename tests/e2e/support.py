"""Shared helpers for the end-to-end tests and the Flink-vs-embedded bench: seed-shaped events,
Avro (Confluent wire format, registered schema) produce, read_committed consume and decode."""

from __future__ import annotations

import contextlib
import io
import json
import random
import struct
import time
import uuid
from collections import Counter
from importlib import resources
from typing import Any

import fastavro
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

EVENT_NAMES = [
    "LoanCreated",
    "LoanUpdated",
    "LoanPaymentSubmitted",
    "CarCreated",
    "CarUpdated",
    "ServiceDone",
]
STATUSES = ["active", "pending", "closed", "late", None]


def raw_schema() -> dict[str, Any]:
    text = resources.files("cdcrouter.schemas").joinpath("raw-business-event.avsc").read_text()
    return dict(json.loads(text))


def make_events(n: int, seed: int = 7, start_ms: int = 1_790_000_000_000) -> list[dict[str, Any]]:
    """Seed-shaped events with a spread that exercises every operator (nulls, missing keys, numbers)."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        name = rnd.choice(EVENT_NAMES)
        etype = "Loan" if name.startswith("Loan") else ("Car" if name.startswith("Car") else "Service")
        attrs: dict[str, str | None] = {}
        if etype == "Loan":
            attrs["loan.loanAmount"] = str(rnd.choice([500, 9999, 10000, 25000.5, 150000]))
            attrs["loan.status"] = rnd.choice(STATUSES)
        elif etype == "Car":
            attrs["car.make"] = rnd.choice(["Volvo", "Tesla", "Fiat", "volvo"])
            if rnd.random() < 0.7:
                attrs["car.year"] = str(rnd.randint(1995, 2026))
        else:
            attrs["service.cost"] = str(rnd.randint(10, 2000))
        ent_id = f"{etype.lower()}-{rnd.randint(1, 400)}"
        entities = [{"entityType": etype, "entityId": ent_id, "updatedAttributes": attrs}]
        if rnd.random() < 0.15:
            entities.append(
                {"entityType": "Customer", "entityId": f"cust-{rnd.randint(1, 50)}", "updatedAttributes": {}}
            )
        out.append(
            {
                "eventHeader": {
                    "uuid": str(uuid.UUID(int=rnd.getrandbits(128))),
                    "eventName": name,
                    "createdDate": start_ms + i,
                    "savedDate": start_ms + i + 5,
                    "eventType": rnd.choice([None, "domain", "outbox"]),
                },
                "eventBody": {"entities": entities},
                "sourceMetadata": {
                    "table": etype.lower() + "s",
                    "operation": rnd.choice(["INSERT", "UPDATE", "DELETE"]),
                    "timestamp": start_ms + i,
                },
            }
        )
    return out


def register_schema(registry_url: str, subject: str, schema: dict[str, Any]) -> int:
    import httpx

    r = httpx.post(
        f"{registry_url.rstrip('/')}/subjects/{subject}/versions",
        json={"schema": json.dumps(schema), "schemaType": "AVRO"},
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        timeout=30,
    )
    r.raise_for_status()
    return int(r.json()["id"])


def encode(schema_id: int, parsed: Any, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(b"\x00" + struct.pack(">I", schema_id))
    fastavro.schemaless_writer(buf, parsed, record)
    return buf.getvalue()


def create_topics(bootstrap: str, names: list[str], partitions: int = 2) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    for f in futures.values():
        f.result(30)


def delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.delete_topics(names).values():
        with contextlib.suppress(Exception):  # already gone
            f.result(30)


def produce(bootstrap: str, topic: str, registry_url: str, events: list[dict[str, Any]]) -> None:
    schema = raw_schema()
    sid = register_schema(registry_url, f"{topic}-value", schema)
    parsed = fastavro.parse_schema(schema)
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "enable.idempotence": True,
            "partitioner": "murmur2_random",
        }
    )
    for ev in events:
        key = ev["eventBody"]["entities"][0]["entityId"].encode()
        p.produce(topic, encode(sid, parsed, ev), key)
        p.poll(0)
    assert p.flush(60) == 0


class Decoder:
    """Decode Confluent wire-format Avro by fetching writer schemas from the registry."""

    def __init__(self, registry_url: str) -> None:
        import httpx

        self.http = httpx.Client(base_url=registry_url.rstrip("/"), timeout=30)
        self.cache: dict[int, Any] = {}

    def __call__(self, data: bytes) -> dict[str, Any]:
        assert data[0] == 0, "not Confluent wire format"
        sid = struct.unpack(">I", data[1:5])[0]
        if sid not in self.cache:
            r = self.http.get(f"/schemas/ids/{sid}")
            r.raise_for_status()
            self.cache[sid] = fastavro.parse_schema(json.loads(r.json()["schema"]))
        return dict(fastavro.schemaless_reader(io.BytesIO(data[5:]), self.cache[sid], None))


def consume_all(
    bootstrap: str, topic: str, *, expect: int | None = None, idle_s: float = 3.0, timeout_s: float = 120.0
) -> list[tuple[bytes | None, bytes]]:
    """Every committed record in ``topic`` (read_committed, from the beginning).

    Stops once ``expect`` records arrived and nothing more came for ``idle_s`` (so extra
    duplicates would still be seen), or after ``idle_s`` of silence when ``expect`` is None.
    """
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"e2e-{uuid.uuid4()}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    out: list[tuple[bytes | None, bytes]] = []
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msgs = c.consume(1000, 0.5)
            for m in msgs:
                if m.error():
                    continue
                out.append((m.key(), m.value()))
                last = time.monotonic()
            if not msgs and (expect is None or len(out) >= expect) and time.monotonic() - last > idle_s:
                break
    finally:
        c.close()
    return out


def consume_topics(
    bootstrap: str,
    topics: list[str],
    *,
    expect: int | None = None,
    idle_s: float = 3.0,
    timeout_s: float = 180.0,
) -> dict[str, list[tuple[bytes | None, bytes]]]:
    """Like :func:`consume_all` over several topics with one consumer, grouped by topic."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"e2e-{uuid.uuid4()}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe(topics)
    out: dict[str, list[tuple[bytes | None, bytes]]] = {t: [] for t in topics}
    seen = 0
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msgs = c.consume(1000, 0.5)
            for m in msgs:
                if m.error():
                    continue
                out[m.topic()].append((m.key(), m.value()))
                seen += 1
                last = time.monotonic()
            if not msgs and (expect is None or seen >= expect) and time.monotonic() - last > idle_s:
                break
    finally:
        c.close()
    return out


def canonical(record: dict[str, Any], key: bytes | None) -> str:
    """One comparable string per filtered record: every field but ``filterMetadata.filteredAt``."""
    rec = json.loads(json.dumps(record))
    rec.get("filterMetadata", {}).pop("filteredAt", None)
    for ent in rec["eventBody"]["entities"]:
        ent["updatedAttributes"] = dict(sorted((ent.get("updatedAttributes") or {}).items()))
    return json.dumps({"key": key.decode() if key else None, "value": rec}, sort_keys=True)


def multiset(records: list[tuple[bytes | None, bytes]], decode: Decoder) -> Counter[str]:
    return Counter(canonical(decode(v), k) for k, v in records)


_ROW = (
    "eventHeader ROW<uuid STRING, eventName STRING, createdDate BIGINT, savedDate BIGINT, eventType STRING>, "
    "eventBody ROW<entities ARRAY<ROW<entityType STRING, entityId STRING, "
    "updatedAttributes MAP<STRING, STRING>>>>, "
    "sourceMetadata ROW<`table` STRING, operation STRING, `timestamp` BIGINT>"
)
_MILLIS = (
    "CAST(TIMESTAMPDIFF(SECOND, TO_TIMESTAMP_LTZ(0, 3), CURRENT_ROW_TIMESTAMP()) AS BIGINT) * 1000 "
    "+ EXTRACT(MILLISECOND FROM CURRENT_ROW_TIMESTAMP())"
)


def handwritten_flink_script(raw_topic: str, filters: list[tuple[str, str, str, str]]) -> str:
    """A Flink script in the compiler's shape (DDL + one statement set, connection placeholders).

    ``filters``: (filter id, consumer id, output topic, SQL condition). Used where a test needs a
    script independent of the compiler (the deploy mechanics), never to judge the compiler.
    """
    kafka = "'properties.bootstrap.servers' = '${KAFKA_BOOTSTRAP_SERVERS}'"
    avro = "'value.format' = 'avro-confluent', 'value.avro-confluent.url' = '${SCHEMA_REGISTRY_URL}'"
    parts = [
        f"CREATE TABLE `raw_events` ({_ROW}) WITH ('connector' = 'kafka', 'topic' = '{raw_topic}', {kafka}, "
        f"'scan.startup.mode' = 'earliest-offset', {avro});"
    ]
    inserts = []
    for fid, consumer, topic, cond in filters:
        table = "sink_" + fid.replace("-", "_")
        parts.append(
            f"CREATE TABLE `{table}` (`k` STRING, {_ROW}, "
            "filterMetadata ROW<filterId STRING, consumerId STRING, filteredAt BIGINT>) "
            f"WITH ('connector' = 'kafka', 'topic' = '{topic}', {kafka}, 'key.format' = 'raw', "
            f"'key.fields' = 'k', 'value.fields-include' = 'EXCEPT_KEY', {avro});"
        )
        inserts.append(
            f"INSERT INTO `{table}` SELECT eventBody.entities[1].entityId, eventHeader, eventBody, "
            "sourceMetadata, "
            f"ROW('{fid}', '{consumer}', {_MILLIS}) FROM `raw_events` WHERE {cond};"
        )
    parts.append("EXECUTE STATEMENT SET BEGIN\n" + "\n".join(inserts) + "\nEND;")
    return "\n".join(parts)


def render(values: dict[str, str]):
    def _render(sql: str) -> str:
        for k, v in values.items():
            sql = sql.replace("${" + k + "}", v)
        return sql

    return _render
