"""Seed-shaped business events for tests and benchmarks (car, loan and service-record changes).

Deterministic: event ``i`` of a generator built with the same seed is always the same, so a test
can recompute what it produced and a benchmark can be rerun on identical data.
"""

from __future__ import annotations

import io
import random
import uuid as _uuid
from collections.abc import Iterator
from typing import Any

import fastavro

from cdcrouter.route.wire import header
from cdcrouter.schemas import parsed_raw_schema

_KINDS = (
    ("Loan", "loan_entities", ("LoanCreated", "LoanUpdated", "LoanPaymentSubmitted", "LoanClosed")),
    ("Car", "car_entities", ("CarCreated", "CarUpdated", "CarSold")),
    ("ServiceRecord", "service_records", ("ServiceScheduled", "ServiceCompleted", "ServiceCancelled")),
)
_MAKES = ("Toyota", "Honda", "Ford", "Tesla", "BMW", "Volvo", "Kia")
_STATUSES = ("PENDING", "ACTIVE", "LATE", "CLOSED")
_SERVICES = ("oil-change", "tires", "brakes", "inspection", "battery")


def make_event(i: int, seed: int = 7, created_ms: int = 1_764_000_000_000) -> dict[str, Any]:
    """Event number ``i``: a decoded BusinessEvent dict shaped like the seed's examples."""
    rng = random.Random(seed * 1_000_003 + i)
    entity_type, table, names = _KINDS[rng.randrange(3)]
    event_name = rng.choice(names)
    entity_id = f"{entity_type[:3].upper()}-{rng.randrange(50_000):05d}"
    attrs: dict[str, str | None]
    if entity_type == "Loan":
        attrs = {
            "loan.loanAmount": f"{rng.randrange(1_000, 120_000)}.{rng.randrange(100):02d}",
            "loan.status": rng.choice(_STATUSES),
            "loan.interestRate": f"{rng.uniform(1, 12):.2f}",
            "loan.termMonths": str(rng.choice((12, 24, 36, 48, 60, 72))),
            "loan.customerId": f"C-{rng.randrange(10_000)}",
            "loan.carId": f"CAR-{rng.randrange(50_000):05d}",
            "payment.amount": str(rng.randrange(100, 3_000))
            if event_name == "LoanPaymentSubmitted"
            else None,
        }
    elif entity_type == "Car":
        attrs = {
            "car.make": rng.choice(_MAKES),
            "car.model": f"M{rng.randrange(30)}",
            "car.year": str(rng.randrange(2005, 2027)),
            "car.vin": f"VIN{rng.randrange(10**12):012d}",
            "car.mileage": str(rng.randrange(0, 250_000)),
            "car.price": f"{rng.randrange(3_000, 95_000)}.00",
            "car.color": rng.choice(("red", "blue", "black", "white", "silver")),
        }
    else:
        attrs = {
            "service.type": rng.choice(_SERVICES),
            "service.cost": f"{rng.randrange(40, 2_500)}.{rng.randrange(100):02d}",
            "service.carId": f"CAR-{rng.randrange(50_000):05d}",
            "service.dealer": f"D-{rng.randrange(300)}",
            "service.mileage": str(rng.randrange(0, 250_000)),
            "service.notes": None if rng.random() < 0.5 else "customer waiting",
        }
    created = created_ms + i
    return {
        "eventHeader": {
            "uuid": str(_uuid.UUID(int=rng.getrandbits(128), version=4)),
            "eventName": event_name,
            "createdDate": created,
            "savedDate": created + rng.randrange(1, 20),
            "eventType": "CDC",
        },
        "eventBody": {
            "entities": [{"entityType": entity_type, "entityId": entity_id, "updatedAttributes": attrs}]
        },
        "sourceMetadata": {
            "table": table,
            "operation": rng.choice(("INSERT", "UPDATE", "UPDATE", "UPDATE", "DELETE")),
            "timestamp": created,
        },
    }


def encode_raw(event: dict[str, Any], schema_id: int) -> bytes:
    """Confluent-framed Avro of a raw event."""
    buf = io.BytesIO()
    buf.write(header(schema_id))
    fastavro.schemaless_writer(buf, parsed_raw_schema(), event)
    return buf.getvalue()


def event_key(event: dict[str, Any]) -> bytes:
    """The Kafka key of an event: its first entity's id."""
    entities = event["eventBody"]["entities"]
    return entities[0]["entityId"].encode() if entities else b""


def raw_records(
    n: int, schema_id: int, seed: int = 7, start: int = 0
) -> Iterator[tuple[bytes, bytes, dict[str, Any]]]:
    """``(key, value, event)`` for events ``start .. start+n-1``."""
    for i in range(start, start + n):
        event = make_event(i, seed)
        yield event_key(event), encode_raw(event, schema_id), event


# Twenty filters over the generated events: the benchmark's workload (seed-style conditions).
_A = "eventBody.entities[0].updatedAttributes."


def _c(field: str, operator: str, **rest: object) -> dict[str, object]:
    return {"field": field, "operator": operator, **rest}


_NUM = {"valueType": "number"}
BENCH_FILTERS: tuple[tuple[str, str, list[dict[str, object]], str], ...] = (
    ("loan-created", "loan-svc", [_c("eventHeader.eventName", "equals", value="LoanCreated")], "AND"),
    (
        "loan-payments",
        "payments",
        [_c("eventHeader.eventName", "equals", value="LoanPaymentSubmitted")],
        "AND",
    ),
    (
        "big-loans",
        "risk",
        [
            _c("eventBody.entities[0].entityType", "equals", value="Loan"),
            _c(_A + "loan.loanAmount", "greaterThan", value=100000, **_NUM),
        ],
        "AND",
    ),
    ("late-loans", "collections", [_c(_A + "loan.status", "equals", value="LATE")], "AND"),
    ("loan-closed", "loan-svc", [_c("eventHeader.eventName", "in", values=["LoanClosed"])], "AND"),
    ("long-loans", "risk", [_c(_A + "loan.termMonths", "greaterThanOrEqual", value=72, **_NUM)], "AND"),
    ("cheap-rate", "marketing", [_c(_A + "loan.interestRate", "lessThan", value=2, **_NUM)], "AND"),
    ("car-sold", "sales", [_c("eventHeader.eventName", "equals", value="CarSold")], "AND"),
    ("tesla", "ev-team", [_c(_A + "car.make", "equals", value="Tesla")], "AND"),
    ("new-cars", "sales", [_c(_A + "car.year", "greaterThanOrEqual", value=2025, **_NUM)], "AND"),
    ("high-mileage", "warranty", [_c(_A + "car.mileage", "between", min=200000, max=250000, **_NUM)], "AND"),
    ("pricey-cars", "finance", [_c(_A + "car.price", "greaterThan", value=80000, **_NUM)], "AND"),
    ("vin-7", "audit", [_c(_A + "car.vin", "matches", value="^VIN7")], "AND"),
    ("service-done", "service-svc", [_c("eventHeader.eventName", "equals", value="ServiceCompleted")], "AND"),
    ("brakes", "safety", [_c(_A + "service.type", "in", values=["brakes", "tires"])], "AND"),
    ("costly-service", "finance", [_c(_A + "service.cost", "greaterThan", value=2000, **_NUM)], "AND"),
    ("service-notes", "support", [_c(_A + "service.notes", "isNotNull")], "AND"),
    ("deletes", "audit", [_c("sourceMetadata.operation", "equals", value="DELETE")], "AND"),
    (
        "created",
        "crm",
        [
            _c("eventHeader.eventName", "equals", value="LoanCreated"),
            _c("eventHeader.eventName", "equals", value="CarCreated"),
        ],
        "OR",
    ),
    ("not-cdc", "audit", [_c("eventHeader.eventType", "notIn", values=["CDC"])], "AND"),
)


def bench_filters_yaml(topic_prefix: str, count: int = 20) -> str:
    """filters.yaml text with the first ``count`` benchmark filters; topics are ``<prefix><id>``.

    JSON is valid YAML, so the text is emitted with ``json`` (one filter per line).
    """
    import json

    lines = ["filters:"]
    for fid, consumer, conditions, logic in BENCH_FILTERS[:count]:
        item = {
            "id": fid,
            "consumerId": consumer,
            "outputTopic": f"{topic_prefix}{fid}",
            "conditions": conditions,
        }
        if logic != "AND":
            item["conditionLogic"] = logic
        lines.append("  - " + json.dumps(item))
    return "\n".join(lines) + "\n"
